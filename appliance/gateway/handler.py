"""The gateway's request path: authenticate → check → limit → route → pick an engine → proxy →
record.

Everything here runs on the event loop; the database is reached through ``sync_to_async`` only
for what the caches do not hold (a key not seen lately, the route table every few seconds, the
audit event and usage record). Each admitted request is an ``Exchange`` whose ending (close the
engine connection, give back the limits, write the records) runs exactly once on every path:
an answer, an error, a client that leaves, a stream that is never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from appliance.access.choices import DataPolicy
from appliance.core.context import current_request_id, current_source_ip
from appliance.core.errors import AuditUnavailable
from appliance.gateway import records
from appliance.gateway.auth import authenticate
from appliance.gateway.choices import Endpoint
from appliance.gateway.engines import Engine, balancer, table_refresh
from appliance.gateway.errors import GatewayError, model_not_found, rate_limited, unavailable
from appliance.gateway.limits import Admission, Limiter
from appliance.gateway.recorder import recorder
from appliance.gateway.records import Inference
from appliance.gateway.requests import (
    REQUIRED,
    cap_tokens,
    content_subject,
    request_body,
    wants_usage,
)
from appliance.gateway.routed import (
    CLASS_HEADER,
    TARGET_HEADER,
    chain_for,
    decide,
    latency_budget,
)
from appliance.gateway.sse import (
    CapturingStreamMeter,
    StreamMeter,
    choice_texts,
    model_renaming,
    usage_of,
)
from appliance.gateway.upstream import NOT_ANSWERED, engine_session
from appliance.privacy.capture import CaptureFailed, capture_open
from appliance.routing import latency
from appliance.routing.classify import TASK_HEADER
from appliance.routing.plans import RoutePlan, Tier

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({502, 503, 504})
# A routed request escalates to the next tier on these answers (and on no engine or a timeout).
ESCALATE_STATUSES = frozenset({429, 500, 502, 503, 504})
PATHS: dict[str, str] = {
    Endpoint.CHAT: "/v1/chat/completions",
    Endpoint.COMPLETIONS: "/v1/completions",
    Endpoint.EMBEDDINGS: "/v1/embeddings",
}
USAGE = re.compile(rb'"usage"\s*:\s*(\{[^{}]*\})')
BYTES_PER_TOKEN = 4  # for charging a prompt whose usage the engine never reported


async def _seed_budget(application_id: int, now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    month_start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return await sync_to_async(records.month_tokens)(application_id, month_start)


limiter = Limiter(_seed_budget)
bookkeeping: set[asyncio.Task[None]] = set()


async def settle(work: Coroutine[Any, Any, None]) -> None:
    """Run end-of-request bookkeeping to the end even when the client has gone and the request's
    task is being cancelled; its failures are logged (the client has its answer already)."""

    async def guarded() -> None:
        try:
            await work
        except Exception:
            logger.exception("gateway bookkeeping failed")

    task = asyncio.ensure_future(guarded())
    bookkeeping.add(task)
    task.add_done_callback(bookkeeping.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


def _audit_unavailable() -> GatewayError:
    return unavailable(
        "The audit log cannot be written, so no answer is given (fail closed).",
        code="audit_unavailable",
    )


def _content_unavailable() -> GatewayError:
    return unavailable(
        "This application's prompts and completions are kept encrypted, and they cannot be "
        "encrypted right now, so no answer is given (fail closed).",
        code="content_unavailable",
    )


async def _record(inference: Inference, *, audit: bool) -> None:
    """Usage record (and audit event); a 503 if the audit event cannot be written."""
    try:
        await recorder.write(inference, audit=audit)
    except AuditUnavailable:
        raise _audit_unavailable() from None


async def _usage_only(inference: Inference) -> None:
    """Usage of a request refused before it was forwarded (no audit event is due)."""
    try:
        await recorder.write(inference, audit=False)
    except AuditUnavailable:
        logger.error("usage record of a refused request not written")


class Exchange:
    """An admitted request: its engine connection, its place in the limits, its records."""

    def __init__(self, inference: Inference, admission: Admission) -> None:
        self.inference = inference
        self.admission = admission
        self.engine: Engine | None = None  # counted in balancer.outstanding while set
        self.response: aiohttp.ClientResponse | None = None
        # A stream's lines, and those read ahead while a tier was on trial (see _open_chain).
        self.lines: AsyncIterator[str] | None = None
        self.opening: list[str] = []
        self.audited = False
        self.ended = False

    def fail(self, status: int, code: str) -> None:
        self.inference.status, self.inference.error_code = status, code

    def close_upstream(self) -> None:
        response, engine = self.response, self.engine
        self.response = self.engine = None
        try:
            if response is not None:
                if response.content.at_eof():
                    response.release()  # read to the end: the connection goes back to the pool
                else:
                    response.close()  # cut short: closing tells vLLM to abort the request
        finally:
            if engine is not None:
                balancer.outstanding[engine.instance] -= 1

    async def end(self) -> None:
        """Close, give back, record: once. Raises the 503 of a failed audit write."""
        if self.ended:
            return
        self.ended = True
        inference = self.inference
        try:
            self.close_upstream()
        finally:
            try:
                tokens = inference.prompt_tokens + inference.completion_tokens
                await limiter.release(self.admission, tokens)
            finally:
                await _record(inference, audit=not self.audited)

    async def end_after_client_left(self) -> None:
        """The client went away before it had the whole answer. A stream is marked 200 once its
        first chunk is in hand (for its audit event), but one never read, or dropped while that
        event was written, reached nobody: 499 all the same; an error already set stays."""
        if self.inference.status in (0, 200):
            self.fail(499, "client_disconnected")
        if not self.inference.prompt_tokens:
            self.inference.prompt_tokens = self.inference.prompt_estimate
        await settle(self.end())


async def infer(request: HttpRequest, endpoint: str) -> HttpResponse | StreamingHttpResponse:
    arrived, started = timezone.now(), time.monotonic()
    principal = await authenticate(request)
    body = request_body(request, endpoint)
    keep = principal.data_policy == DataPolicy.KEEP_ENCRYPTED
    subject = content_subject(request) if keep else None
    inference = Inference(
        principal,
        endpoint,
        body["model"],
        bool(body.get("stream")),
        arrived,
        started,
        request_id=current_request_id(),
        source_ip=current_source_ip(),
        prompt_estimate=len(request.body) // BYTES_PER_TOKEN,
    )
    target = principal.targets.get(body["model"])
    plan = None if target is not None else principal.routes.get(body["model"])
    if target is None and plan is None:
        inference.status, inference.error_code = 404, "model_not_found"
        await _record(inference, audit=True)
        raise model_not_found(body["model"])
    inference.target = target
    budget = latency_budget(request)
    cap_tokens(body, principal.limits, endpoint)
    # The concurrency place and the engine's request id are ours, never the client's.
    slot = uuid.uuid4().hex
    admission = await limiter.acquire(principal.application_id, principal.limits, slot)
    if admission.refusal is not None:
        refusal = admission.refusal
        inference.status, inference.error_code = 429, refusal.code
        await _usage_only(inference)
        raise rate_limited(refusal.message, code=refusal.code, retry_after=refusal.retry_after)
    exchange = Exchange(inference, admission)
    seconds: float = settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS
    if budget is not None:
        seconds = min(seconds, budget / 1000)
    deadline = asyncio.get_running_loop().time() + seconds
    try:
        if keep:  # sealed before anything, the embedding model included, sees the prompt
            await _capture(exchange, body, endpoint, subject)
        if plan is not None:
            hint = request.headers.get(TASK_HEADER)
            chain = await _decide(exchange, plan, body, hint, budget, deadline)
        else:
            assert target is not None
            chain = [Tier(target)]
        response = await _proxy(exchange, body, endpoint, slot, deadline, chain)
        for name, value in _decision_headers(inference).items():
            response[name] = value
        return response
    except asyncio.CancelledError:
        await exchange.end_after_client_left()
        raise
    except GatewayError as error:
        if not inference.status:
            exchange.fail(error.status, error.code or "invalid_request")
        await exchange.end()  # records the failure set on the exchange (or raises a 503)
        error.headers.update(_decision_headers(inference))
        raise
    except BaseException:
        exchange.fail(500, "internal_error")
        await settle(exchange.end())
        raise


async def _decide(
    exchange: Exchange,
    plan: RoutePlan,
    body: dict[str, Any],
    hint: str | None,
    budget: int | None,
    deadline: float,
) -> list[Tier]:
    """The task class and the chain of targets for a request to a route; the semantic
    classifier may use what is left of the request's time, up to its own limit."""
    inference = exchange.inference
    inference.route, inference.route_version = plan.name, plan.version
    left = deadline - asyncio.get_running_loop().time()
    limit = min(settings.APPLIANCE_ROUTING_SEMANTIC_TIMEOUT_MS / 1000, max(0.0, left))
    decision = await decide(plan, body, hint, limit)
    inference.task_class, inference.route_reason = decision.task_class, decision.reason
    chain = chain_for(plan, decision, budget)
    inference.target = chain[0].target
    return chain


def _decision_headers(inference: Inference) -> dict[str, str]:
    """The chosen task class and target, on every answer through a route once it decided
    (errors included)."""
    if not inference.route or not inference.task_class:
        return {}
    headers = {CLASS_HEADER: inference.task_class}
    if inference.target is not None:
        headers[TARGET_HEADER] = inference.target.name
    return headers


async def _capture(
    exchange: Exchange, body: dict[str, Any], endpoint: str, subject: str | None
) -> None:
    """Seal the prompt under its subject's key before anything is forwarded: without a key there
    is no answer (fail closed)."""
    inference = exchange.inference
    try:
        inference.content = await sync_to_async(capture_open)(
            application_id=inference.principal.application_id,
            request_id=inference.request_id,
            subject=subject,
            prompt=body[REQUIRED[endpoint][0]],
        )
    except CaptureFailed as exc:
        # Class names only: a message could quote the prompt, a key or a subject id.
        cause = type(exc.__cause__ or exc).__name__
        logger.error("content to keep cannot be encrypted: %s", cause)
        exchange.fail(503, "content_unavailable")
        raise _content_unavailable() from None


def _seal_answer(exchange: Exchange, content: bytes) -> None:
    """Seal the completion before the answer leaves; one that cannot be sealed is withheld."""
    capture = exchange.inference.content
    assert capture is not None
    try:
        document = json.loads(content)
    except ValueError:
        document = None
    try:
        capture.seal_completion(choice_texts(document))
    except Exception as exc:  # whatever it is, the answer must not leave unkept
        logger.error("completion to keep cannot be encrypted: %s", type(exc).__name__)
        exchange.fail(503, "content_unavailable")
        raise _content_unavailable() from None


def _seal_stream(inference: Inference, meter: CapturingStreamMeter) -> None:
    """Seal a stream's completion once it has ended. The client has it already, so a failure can
    only be logged and marked on the usage record."""
    assert inference.content is not None
    try:
        inference.content.seal_completion(meter.texts())
    except Exception as exc:  # the stream's bookkeeping must still run
        logger.error("streamed completion to keep cannot be encrypted: %s", type(exc).__name__)
        inference.error_code = inference.error_code or "content_unavailable"


async def _routes(exchange: Exchange) -> list[Engine]:
    target = exchange.inference.target
    assert target is not None
    await table_refresh()
    engines = balancer.candidates(target.model_id, target.adapter_name)
    if not engines:
        exchange.fail(503, "no_healthy_engine")
        raise unavailable(
            f"No healthy engine serves `{target.name}`: "
            f"{balancer.why_none(target.model_id, target.adapter_name)}.",
            code="no_healthy_engine",
        )
    return engines


def _timed_out(exchange: Exchange) -> GatewayError:
    exchange.fail(504, "engine_timeout")
    return GatewayError(
        504, "The engine did not answer in time.", type="timeout", code="engine_timeout"
    )


async def _open(
    exchange: Exchange, body: dict[str, Any], endpoint: str, engines: list[Engine], slot: str
) -> aiohttp.ClientResponse:
    """The engine's response, its headers read. A connection that fails before the engine
    answered (nothing has reached the client yet) is retried on another engine."""
    tried: set[str] = set()
    session = engine_session()
    inference = exchange.inference
    while True:
        engine = balancer.choose(engines, tried)
        if engine is None:
            exchange.fail(503, "engines_unreachable")
            raise unavailable(
                f"No engine serving `{inference.requested}` answered ({len(tried)} tried).",
                code="engines_unreachable",
            )
        tried.add(engine.instance)
        inference.engine, inference.attempts = engine, inference.attempts + 1
        payload = json.dumps({**body, "model": engine.served_name}).encode()
        headers = {
            "Authorization": f"Bearer {engine.api_key}",
            "X-Request-ID": slot,
            "Content-Type": "application/json",
        }
        balancer.outstanding[engine.instance] += 1
        exchange.engine = engine
        try:
            exchange.response = await session.post(
                engine.base_url + PATHS[endpoint], data=payload, headers=headers
            )
        except aiohttp.ConnectionTimeoutError:  # could not connect in time
            _set_aside(exchange, engine)
            continue
        except aiohttp.ServerTimeoutError:  # connected, but no answer in time
            raise _timed_out(exchange) from None
        except NOT_ANSWERED:  # refused, reset, closed before answering
            _set_aside(exchange, engine)
            continue
        if exchange.response.status in RETRY_STATUSES and len(tried) < len(engines):
            _set_aside(exchange, engine)
            continue
        return exchange.response


async def _open_chain(
    exchange: Exchange,
    body: dict[str, Any],
    endpoint: str,
    chain: list[Tier],
    slot: str,
    deadline: float,
) -> aiohttp.ClientResponse:
    """The first tier that answers: a tier without a ready engine, one that does not answer in
    its time, or one that answers with a server error gives way to the next. A stream's tier
    must also send its first event in time, and not an error. The last tier's failure is the
    request's."""
    inference = exchange.inference
    loop = asyncio.get_running_loop()
    for position, tier in enumerate(chain):
        last = position == len(chain) - 1
        inference.target, inference.tier_started = tier.target, time.monotonic()
        tier_deadline = deadline
        if tier.timeout_ms is not None and not last:
            tier_deadline = min(deadline, loop.time() + tier.timeout_ms / 1000)
        try:
            engines = await _routes(exchange)
            async with asyncio.timeout_at(tier_deadline):
                response = await _open(exchange, body, endpoint, engines, slot)
                if inference.stream and response.status == 200 and not last:
                    trouble = await _first_event(exchange, response)
                    if trouble:
                        _escalate(exchange, tier, trouble)
                        continue
        except GatewayError as failure:
            if last:
                raise
            _escalate(exchange, tier, failure.code or "failed")
            continue
        except TimeoutError:
            if last or tier_deadline >= deadline:
                raise
            _escalate(exchange, tier, "tier_timeout")
            continue
        if response.status in ESCALATE_STATUSES and not last:
            _escalate(exchange, tier, f"engine_{response.status}")
            continue
        return response
    raise AssertionError("a chain has at least one tier")


async def _first_event(exchange: Exchange, response: aiohttp.ClientResponse) -> str:
    """Read a stream up to its first event (kept for _stream); what is wrong with it, if
    anything: an error event, or an end before any event."""
    exchange.lines = _lines(response)
    exchange.opening = []
    async for line in exchange.lines:
        exchange.opening.append(line)
        if line.startswith("data:"):
            return "engine_stream_error" if _is_error_event(line) else ""
    return "engine_stream_broken"


def _is_error_event(line: str) -> bool:
    if '"error"' not in line:
        return False
    try:
        document = json.loads(line[5:])
    except ValueError:
        return False
    return isinstance(document, dict) and "error" in document


def _escalate(exchange: Exchange, tier: Tier, why: str) -> None:
    """Give up on a tier (nothing reached the client yet) and note why, for the record."""
    exchange.close_upstream()
    exchange.lines, exchange.opening = None, []
    inference = exchange.inference
    inference.engine = None  # the record names the engine that answered, not one given up
    inference.escalations.append(f"{tier.target.name}: {why}")
    inference.status, inference.error_code = 0, ""


def _set_aside(exchange: Exchange, engine: Engine) -> None:
    exchange.close_upstream()
    balancer.cool(engine)
    balancer.forget_table()  # the agent may have moved it: reread at the next request


async def _proxy(
    exchange: Exchange,
    body: dict[str, Any],
    endpoint: str,
    slot: str,
    deadline: float,
    chain: list[Tier],
) -> HttpResponse | StreamingHttpResponse:
    inference = exchange.inference
    client_wants_usage = wants_usage(body)
    if inference.stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    try:
        async with asyncio.timeout_at(deadline):
            response = await _open_chain(exchange, body, endpoint, chain, slot, deadline)
            if inference.stream and response.status == 200:
                return await _stream(exchange, response, client_wants_usage, deadline)
            content = await response.read()
    except TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
        raise _timed_out(exchange) from None
    except aiohttp.ClientError:
        exchange.fail(502, "engine_stream_broken")
        raise GatewayError(
            502,
            "The engine closed the connection before answering.",
            type="api_error",
            code="engine_stream_broken",
        ) from None
    inference.status = response.status
    if response.status == 200:
        usage = _usage_of_body(content)
        if usage:
            inference.prompt_tokens, inference.completion_tokens = usage
        rename = model_renaming(exchange_engine(exchange).served_name, inference.requested)
        if rename is not None:
            content = content.replace(rename[0].encode(), rename[1].encode(), 1)
        if inference.content is not None and endpoint != Endpoint.EMBEDDINGS:
            _seal_answer(exchange, content)
        if inference.route and inference.target is not None:
            took = (time.monotonic() - (inference.tier_started or inference.started)) * 1000
            latency.observe(inference.target.name, took)
    else:
        inference.error_code = f"engine_{response.status}"
    await exchange.end()  # fail closed: no answer without its audit event
    return HttpResponse(
        content,
        status=response.status,
        content_type=response.headers.get("Content-Type", "application/json"),
    )


def exchange_engine(exchange: Exchange) -> Engine:
    engine = exchange.inference.engine
    assert engine is not None
    return engine


def _usage_of_body(content: bytes) -> tuple[int, int] | None:
    """The usage object near the end of an answer, without parsing the whole answer on the
    event loop (an embedding answer can be megabytes); the whole body only as a fallback."""
    found = USAGE.search(content, max(0, len(content) - 4096))
    try:
        document = {"usage": json.loads(found.group(1))} if found else json.loads(content)
    except ValueError:
        return None
    return usage_of(document) if isinstance(document, dict) else None


async def _stream(
    exchange: Exchange,
    response: aiohttp.ClientResponse,
    client_wants_usage: bool,
    deadline: float,
) -> StreamingHttpResponse:
    """Read to the first event, write the audit event (fail closed), then pass the rest through
    as it arrives. A client that goes away cancels the generator below, which closes the engine's
    connection, and vLLM aborts the request."""
    inference = exchange.inference
    rename = model_renaming(exchange_engine(exchange).served_name, inference.requested)
    capturing = (
        None
        if inference.content is None
        else CapturingStreamMeter(client_wants_usage=client_wants_usage, rename=rename)
    )
    meter = capturing or StreamMeter(client_wants_usage=client_wants_usage, rename=rename)
    lines = exchange.lines or _lines(response)
    first = [chunk for line in exchange.opening if (chunk := meter.feed(line)) is not None]
    if not first:
        async for line in lines:
            chunk = meter.feed(line)
            if chunk is not None:
                first.append(chunk)
                break
    inference.first_token_at = time.monotonic()
    inference.status = 200
    # Marked first: if the client leaves during the write, the (shielded) write still lands and
    # the exchange's end must not write a second event.
    exchange.audited = True
    try:
        await recorder.write(inference, usage=False, audit=True)
    except AuditUnavailable:
        exchange.audited = False
        exchange.fail(503, "audit_unavailable")
        raise _audit_unavailable() from None

    async def events() -> AsyncIterator[bytes]:
        try:
            for opening in first:
                yield opening
            async with asyncio.timeout_at(deadline):
                async for line in lines:
                    chunk = meter.feed(line)
                    if chunk is not None:
                        yield chunk
        except TimeoutError:
            inference.error_code = "engine_timeout"
            yield _sse_error("The engine did not finish in time.", "engine_timeout")
        except aiohttp.ClientError:
            inference.error_code = "engine_stream_broken"
            yield _sse_error("The engine closed the stream.", "engine_stream_broken")
        except (asyncio.CancelledError, GeneratorExit):
            inference.status, inference.error_code = 499, "client_disconnected"
            raise
        finally:
            inference.prompt_tokens, inference.completion_tokens = meter.tokens(
                inference.prompt_estimate
            )
            if meter.error_code and not inference.error_code:
                inference.error_code = meter.error_code
            if capturing is not None:
                _seal_stream(inference, capturing)
            await settle(exchange.end())

    streaming = StreamingHttpResponse(events(), content_type="text/event-stream")
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"  # a reverse proxy must not buffer the stream
    # If the client leaves before Django starts reading the generator, its ``finally`` never
    # runs: end the exchange when the response is dropped instead.
    loop = asyncio.get_running_loop()
    weakref.finalize(streaming, _end_unread, loop, exchange)
    return streaming


async def _lines(response: aiohttp.ClientResponse) -> AsyncIterator[str]:
    """The engine's SSE lines, decoded, without their line ends."""
    async for raw in response.content:
        yield raw.decode("utf-8", errors="replace").rstrip("\r\n")


def _end_unread(loop: asyncio.AbstractEventLoop, exchange: Exchange) -> None:
    if not exchange.ended and not loop.is_closed():
        loop.call_soon_threadsafe(lambda: asyncio.ensure_future(exchange.end_after_client_left()))


def _sse_error(message: str, code: str) -> bytes:
    error = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return f"data: {json.dumps(error)}\n\n".encode()

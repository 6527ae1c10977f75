"""The gateway's request path: authenticate → check → limit → pick an engine → proxy → record.

Everything here runs on the event loop; the database is reached through ``sync_to_async`` only
for what the caches do not hold (a key not seen lately, the route table every few seconds, the
audit event and usage record).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from appliance.core.context import current_request_id
from appliance.core.errors import AuditUnavailable
from appliance.gateway import records
from appliance.gateway.auth import authenticate
from appliance.gateway.choices import Endpoint
from appliance.gateway.engines import Balancer, Engine, route_table_load
from appliance.gateway.errors import GatewayError, model_not_found, rate_limited, unavailable
from appliance.gateway.limits import Limiter
from appliance.gateway.records import Inference
from appliance.gateway.requests import cap_tokens, request_body, wants_usage
from appliance.gateway.sse import StreamMeter, usage_of
from appliance.gateway.upstream import engine_client

RETRY_STATUSES = frozenset({502, 503, 504})
CONNECTION_FAILURES = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)
PATHS: dict[str, str] = {
    Endpoint.CHAT: "/v1/chat/completions",
    Endpoint.COMPLETIONS: "/v1/completions",
    Endpoint.EMBEDDINGS: "/v1/embeddings",
}


async def _seed_budget(application_id: int, now: float) -> int:
    moment = datetime.fromtimestamp(now, UTC)
    month_start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return await sync_to_async(records.month_tokens)(application_id, month_start)


balancer = Balancer()
limiter = Limiter(_seed_budget)
bookkeeping: set[asyncio.Task[None]] = set()


async def settle(work: Coroutine[Any, Any, None]) -> None:
    """Run end-of-request bookkeeping (release limits, write usage) to the end even when the
    client has gone and the request's task is being cancelled."""
    task = asyncio.ensure_future(work)
    bookkeeping.add(task)
    task.add_done_callback(bookkeeping.discard)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)


def _audit_unavailable() -> GatewayError:
    return unavailable(
        "The audit log cannot be written, so no answer is given (fail closed).",
        code="audit_unavailable",
    )


async def _finish(inference: Inference, *, audit: bool) -> None:
    try:
        await sync_to_async(records.inference_finish)(inference, audit=audit)
    except AuditUnavailable:
        raise _audit_unavailable() from None


async def infer(request: HttpRequest, endpoint: str) -> HttpResponse | StreamingHttpResponse:
    arrived, started = timezone.now(), time.monotonic()
    principal = await authenticate(request)
    body = request_body(request, endpoint)
    stream = bool(body.get("stream"))
    inference = Inference(principal, endpoint, body["model"], stream, arrived, started)
    target = principal.targets.get(body["model"])
    if target is None:
        inference.status, inference.error_code = 404, "model_not_found"
        await _finish(inference, audit=True)
        raise model_not_found(body["model"])
    inference.target = target
    cap_tokens(body, principal.limits, endpoint)
    request_id = current_request_id()
    refusal = await limiter.acquire(principal.application_id, principal.limits, request_id)
    if refusal is not None:
        inference.status, inference.error_code = 429, refusal.code
        await sync_to_async(records.usage_only)(inference)
        raise rate_limited(refusal.message, code=refusal.code, retry_after=refusal.retry_after)
    released = False

    async def release() -> None:
        nonlocal released
        if not released:
            released = True
            tokens = inference.prompt_tokens + inference.completion_tokens
            await limiter.release(principal.application_id, principal.limits, request_id, tokens)

    try:
        response = await _proxy(inference, body, endpoint, release)
    except BaseException:
        await settle(release())
        raise
    if not isinstance(response, StreamingHttpResponse):
        await settle(release())
    return response


async def _routes(inference: Inference) -> list[Engine]:
    target = inference.target
    assert target is not None
    if balancer.table_stale():
        balancer.set_table(await sync_to_async(route_table_load)())
    engines = balancer.candidates(target.model_id, target.adapter_name)
    if not engines:
        inference.status, inference.error_code = 503, "no_healthy_engine"
        await _finish(inference, audit=True)
        raise unavailable(
            f"No healthy engine serves `{target.name}`: "
            f"{balancer.why_none(target.model_id, target.adapter_name)}.",
            code="no_healthy_engine",
        )
    return engines


async def _open(
    inference: Inference, body: dict[str, Any], endpoint: str, engines: list[Engine]
) -> httpx.Response:
    """The engine's response, its headers read; a refused connection (nothing sent to the client
    yet) is retried on another engine."""
    tried: set[str] = set()
    client = engine_client()
    while True:
        engine = balancer.choose(engines, tried)
        if engine is None:
            inference.status, inference.error_code = 503, "engines_unreachable"
            await _finish(inference, audit=True)
            raise unavailable(
                f"No engine serving `{inference.requested}` answered ({len(tried)} tried).",
                code="engines_unreachable",
            )
        tried.add(engine.instance)
        inference.engine, inference.attempts = engine, inference.attempts + 1
        upstream = client.build_request(
            "POST",
            engine.base_url + PATHS[endpoint],
            json={**body, "model": engine.served_name},
            headers={
                "Authorization": f"Bearer {engine.api_key}",
                "X-Request-ID": current_request_id(),
            },
        )
        balancer.outstanding[engine.instance] += 1
        try:
            response = await client.send(upstream, stream=True)
        except CONNECTION_FAILURES:
            balancer.outstanding[engine.instance] -= 1
            balancer.cool(engine)
            balancer.forget_table()  # the agent may have moved it: reread at the next request
            continue
        except httpx.TimeoutException:
            balancer.outstanding[engine.instance] -= 1
            await _timed_out(inference)
        except BaseException:
            balancer.outstanding[engine.instance] -= 1
            raise
        if response.status_code in RETRY_STATUSES and len(tried) < len(engines):
            await response.aclose()
            balancer.outstanding[engine.instance] -= 1
            balancer.cool(engine)
            continue
        return response


async def _timed_out(inference: Inference) -> None:
    inference.status, inference.error_code = 504, "engine_timeout"
    await _finish(inference, audit=True)
    raise GatewayError(
        504, "The engine did not answer in time.", type="timeout", code="engine_timeout"
    )


async def _engine_broke(inference: Inference) -> None:
    inference.status, inference.error_code = 502, "engine_stream_broken"
    await _finish(inference, audit=True)
    raise GatewayError(
        502,
        "The engine closed the connection before answering.",
        type="api_error",
        code="engine_stream_broken",
    )


async def _proxy(
    inference: Inference, body: dict[str, Any], endpoint: str, release: Any
) -> HttpResponse | StreamingHttpResponse:
    engines = await _routes(inference)
    client_wants_usage = wants_usage(body)
    if inference.stream:
        body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    response = await _open(inference, body, endpoint, engines)
    engine = inference.engine
    assert engine is not None
    if inference.stream and response.status_code == 200:
        return await _stream(inference, response, engine, client_wants_usage, release)
    try:
        async with asyncio.timeout(settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS):
            content = await response.aread()
    except (TimeoutError, httpx.TimeoutException):
        await _timed_out(inference)
    except httpx.HTTPError:
        await _engine_broke(inference)
    finally:
        await response.aclose()
        balancer.outstanding[engine.instance] -= 1
    inference.status = response.status_code
    if response.status_code == 200:
        usage = _usage_of_body(content)
        if usage:
            inference.prompt_tokens, inference.completion_tokens = usage
    else:
        inference.error_code = f"engine_{response.status_code}"
    await _finish(inference, audit=True)
    return HttpResponse(
        content,
        status=response.status_code,
        content_type=response.headers.get("content-type", "application/json"),
    )


def _usage_of_body(content: bytes) -> tuple[int, int] | None:
    try:
        document = json.loads(content)
    except ValueError:
        return None
    return usage_of(document) if isinstance(document, dict) else None


async def _stream(
    inference: Inference,
    response: httpx.Response,
    engine: Engine,
    client_wants_usage: bool,
    release: Any,
) -> StreamingHttpResponse:
    """Read to the first event, write the audit event (fail closed), then pass the rest through
    as it arrives. A client that goes away cancels this generator, which closes the engine's
    connection, and vLLM aborts the request."""
    meter = StreamMeter(client_wants_usage=client_wants_usage)
    lines = response.aiter_lines()
    first: list[bytes] = []

    async def close() -> None:
        await response.aclose()
        balancer.outstanding[engine.instance] -= 1

    try:
        async with asyncio.timeout(settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS):
            async for line in lines:
                chunk = meter.feed(line)
                if chunk is not None:
                    first.append(chunk)
                    break
        inference.first_token_at = time.monotonic()
        inference.status = 200
        await _finish_audit(inference)
    except BaseException as exc:
        await close()
        if isinstance(exc, TimeoutError | httpx.TimeoutException):
            await _timed_out(inference)
        if isinstance(exc, httpx.HTTPError):
            await _engine_broke(inference)
        raise

    async def events() -> AsyncIterator[bytes]:
        deadline = inference.started + settings.APPLIANCE_GATEWAY_TIMEOUT_SECONDS
        try:
            for opening in first:
                yield opening
            async for line in lines:
                chunk = meter.feed(line)
                if chunk is not None:
                    yield chunk
                if time.monotonic() > deadline:
                    inference.error_code = "engine_timeout"
                    break
        except asyncio.CancelledError:
            inference.status, inference.error_code = 499, "client_disconnected"
            raise
        except httpx.HTTPError:
            inference.error_code = "engine_stream_broken"
        finally:
            if meter.usage:
                inference.prompt_tokens, inference.completion_tokens = meter.usage
            if meter.error_code and not inference.error_code:
                inference.error_code = meter.error_code
            await settle(_after_stream(inference, close, release))

    streaming = StreamingHttpResponse(events(), content_type="text/event-stream")
    streaming["Cache-Control"] = "no-cache"
    streaming["X-Accel-Buffering"] = "no"  # a reverse proxy must not buffer the stream
    return streaming


async def _after_stream(inference: Inference, close: Any, release: Any) -> None:
    await close()
    await release()
    await sync_to_async(records.usage_only)(inference)


async def _finish_audit(inference: Inference) -> None:
    try:
        await sync_to_async(records.inference_audit)(inference)
    except AuditUnavailable:
        raise _audit_unavailable() from None

"""Failover between engines, a client that goes away, and the audit log that cannot be written."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import httpx
import pytest

from appliance.audit.models import AuditEvent, AuditSequence
from appliance.fleet.models import EngineInstance
from appliance.gateway.models import UsageRecord
from tests.gateway.test_errors import assert_error, post

MESSAGES = [{"role": "user", "content": "hello"}]


def test_a_refused_connection_is_retried_on_another_engine(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    alive, dead = fake_engines(), fake_engines()
    serve(approved_model, [alive, dead])
    dead.stop()  # its port now refuses connections, as when vLLM crashed
    _, key = application(grants=[approved_model])

    statuses = [post(gateway, key).status_code for _ in range(20)]

    assert statuses == [200] * 20
    assert len(alive.requests) == 20
    attempts = list(UsageRecord.objects.values_list("attempts", flat=True))
    # Engines are picked at random among equals: some request met the dead one first (the
    # chance that none of 20 did is one in a million), and went on to the live one.
    assert 2 in attempts


def test_when_every_engine_refuses_the_answer_is_503(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    first, second = fake_engines(), fake_engines()
    serve(approved_model, [first, second])
    first.stop()
    second.stop()
    _, key = application(grants=[approved_model])

    error = assert_error(post(gateway, key), 503, "engines_unreachable")

    assert "2 tried" in error["message"]
    assert UsageRecord.objects.get().attempts == 2


def test_load_is_spread_over_the_engines(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engines = [fake_engines(), fake_engines()]
    serve(approved_model, engines)
    _, key = application(grants=[approved_model])
    for _ in range(20):
        post(gateway, key)
    assert all(len(e.requests) >= 3 for e in engines)  # random tie-breaks, never all on one


def test_a_client_that_disconnects_cancels_the_engine_request(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines(hold=True, chunks=50)
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model])
    body = {"model": "base-model", "messages": MESSAGES, "stream": True}

    def read_one_chunk_and_leave() -> bool:
        url = f"{gateway.url}/chat/completions"
        with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
        return engine.disconnected.wait(5)

    assert gateway.run(read_one_chunk_and_leave)
    record = UsageRecord.objects.get()
    assert (record.status, record.error_code) == (499, "client_disconnected")


@pytest.mark.parametrize("stream", [False, True])
def test_no_answer_is_given_when_the_audit_log_cannot_be_written(
    gateway: Any,
    application: Any,
    approved_model: Any,
    serve: Any,
    fake_engines: Any,
    stream: bool,
) -> None:
    serve(approved_model, [fake_engines()])
    _, key = application(grants=[approved_model])
    before = AuditEvent.objects.count()
    AuditSequence.objects.all().delete()  # the audit writer cannot take a sequence number

    body = {"model": "base-model", "messages": MESSAGES, "stream": stream}
    response = post(gateway, key, body)

    error = assert_error(response, 503, "audit_unavailable")
    assert "fail closed" in error["message"]
    assert "ok" not in response.text and "t0" not in response.text
    assert AuditEvent.objects.count() == before
    assert not UsageRecord.objects.exists()


class ClosingServer:
    """Accepts connections and closes them without answering: an engine dying mid-request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.recv(65536)
            connection.close()


def test_a_connection_closed_before_the_answer_is_retried_on_another_engine(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    alive, dying = fake_engines(), ClosingServer()
    serve(approved_model, [alive, alive])
    instance = EngineInstance.objects.order_by("replica").last()
    instance.port = dying.port  # the second replica now hangs up on every request
    instance.save()
    _, key = application(grants=[approved_model])

    # The balancer picks at random between equally idle engines: ask until the dying one has been
    # picked (six tries missed it one run in 64); every answer must still be 200.
    statuses = []
    while not dying.accepted and len(statuses) < 40:
        statuses.append(post(gateway, key).status_code)
    statuses += [post(gateway, key).status_code for _ in range(3)]

    assert dying.accepted >= 1
    assert set(statuses) == {200}, statuses
    dying.sock.close()


def test_a_client_that_leaves_before_the_answer_still_leaves_its_records(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines(delay=1.0)
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model])
    body = {"model": "base-model", "messages": MESSAGES}

    def leave_early() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{gateway.url}/chat/completions",
                json=body,
                timeout=0.3,
                headers={"Authorization": f"Bearer {key}"},
            )
        time.sleep(0.3)

    gateway.run(leave_early)
    assert engine.requests  # the engine got the prompt ...
    record = UsageRecord.objects.get()  # ... so the request is on record
    assert (record.status, record.error_code) == (499, "client_disconnected")
    assert record.prompt_tokens > 0  # charged an estimate: the engine never said
    event = AuditEvent.objects.get(action="inference")
    assert (event.outcome, event.details["status"]) == ("failure", 499)


def test_a_stream_cut_short_is_charged_for_what_passed(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines(hold=True, chunks=5)
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model])
    body = {"model": "base-model", "messages": MESSAGES, "stream": True}

    def read_and_leave() -> None:
        url = f"{gateway.url}/chat/completions"
        with httpx.stream("POST", url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            lines = r.iter_lines()
            next(lines)
        engine.disconnected.wait(5)

    gateway.run(read_and_leave)
    record = UsageRecord.objects.get()
    assert record.status == 499
    assert (record.prompt_tokens > 0, record.completion_tokens) == (True, 1)


def test_the_clients_request_id_is_echoed_but_never_used_as_a_limit_slot(
    gateway: Any, application: Any, approved_model: Any, serve: Any, fake_engines: Any
) -> None:
    engine = fake_engines(hold=True)
    serve(approved_model, [engine])
    _, key = application(grants=[approved_model], max_concurrent_requests=1)
    headers = {"Authorization": f"Bearer {key}", "X-Request-ID": "the-same-id-123"}
    body = {"model": "base-model", "messages": MESSAGES, "stream": True}
    url = f"{gateway.url}/chat/completions"

    def scenario() -> tuple[str, int]:
        with httpx.stream("POST", url, json=body, headers=headers) as held:
            lines = held.iter_lines()
            next(lines)
            second = httpx.post(url, json=body, headers=headers)
        return held.headers["X-Request-ID"], second.status_code

    echoed, second = gateway.run(scenario)
    assert (echoed, second) == ("the-same-id-123", 429)
    assert engine.requests[0]["request_id"] != "the-same-id-123"
    assert set(UsageRecord.objects.values_list("request_id", flat=True)) == {"the-same-id-123"}

"""Every response carries a request id: the caller's when it is short and plain, else a new one."""

from __future__ import annotations

import re

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory

from appliance.core.context import current_request_id, current_source_ip
from appliance.core.middleware import RequestContextMiddleware

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def test_request_id_is_generated_when_absent() -> None:
    first = Client().get("/healthz")["X-Request-ID"]
    second = Client().get("/healthz")["X-Request-ID"]
    assert GENERATED.match(first)
    assert GENERATED.match(second)
    assert first != second


@pytest.mark.parametrize(
    "incoming", ["script-run-0001", "abcdefgh", "A.b_C-9" * 9 + "x", "0123456789abcdef" * 4]
)
def test_safe_request_id_is_passed_through(incoming: str) -> None:
    response = Client().get("/healthz", headers={"X-Request-ID": incoming})
    assert response["X-Request-ID"] == incoming


@pytest.mark.parametrize(
    "incoming",
    [
        "run-0001\nX-Injected: yes",
        "run-0001\r\n",
        "x" * 200,
        "x" * 65,
        "short",
        "has space 0001",
        "semi;colon;0001",
        "ünïcode-0001",
        "../../etc/passwd",
        "<script>alert(1)</script>",
        "",
    ],
)
def test_unsafe_request_id_is_replaced(incoming: str) -> None:
    response = Client().get("/healthz", headers={"X-Request-ID": incoming})
    assert GENERATED.match(response["X-Request-ID"]), response["X-Request-ID"]


def test_context_is_set_during_the_request_and_cleared_after() -> None:
    seen: dict[str, str] = {}

    def view(request: HttpRequest) -> HttpResponse:
        seen["id"], seen["ip"] = current_request_id(), current_source_ip()
        return HttpResponse("ok")

    middleware = RequestContextMiddleware(view)
    request = RequestFactory().get(
        "/", headers={"X-Request-ID": "corr-12345"}, REMOTE_ADDR="10.1.2.3"
    )
    response = middleware(request)
    assert seen == {"id": "corr-12345", "ip": "10.1.2.3"}
    assert response["X-Request-ID"] == "corr-12345"
    assert (current_request_id(), current_source_ip()) == ("", "")


def test_context_is_cleared_when_the_view_raises() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        RequestContextMiddleware(view)(RequestFactory().get("/"))
    assert (current_request_id(), current_source_ip()) == ("", "")

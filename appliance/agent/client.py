"""The control plane as the agent sees it: three calls of the agent API over HTTP(S)."""

from __future__ import annotations

from typing import Any

import httpx

API = "/api/agent/v1"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class Unreachable(Exception):
    """The control plane did not answer (or answered 5xx): keep serving, try again later."""


class Refused(Exception):
    """The control plane refused this node (401/403): its credential is revoked or wrong."""


class Rejected(Exception):
    """A 4xx other than 401/403: our request was wrong; the detail says why."""


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict) and "detail" in body:
        return f"HTTP {response.status_code}: {body.get('code', '')}: {body['detail']}"
    return f"HTTP {response.status_code}"


def _checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code in (401, 403):
        raise Refused(_detail(response))
    if response.status_code >= 500:
        raise Unreachable(_detail(response))
    if response.status_code >= 400:
        raise Rejected(_detail(response))
    try:
        body = response.json()
    except ValueError as exc:  # e.g. a proxy's maintenance page: treat as not there
        raise Unreachable(f"HTTP {response.status_code}: not a JSON answer") from exc
    if not isinstance(body, dict):
        raise Unreachable("the control plane answered with something other than an object")
    return body


def http_client(
    server: str, credential: str | None = None, verify: bool | str = True
) -> httpx.Client:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    # trust_env=False: no proxy from the environment; the control plane is on the local network.
    return httpx.Client(
        base_url=server.rstrip("/"),
        headers=headers,
        timeout=TIMEOUT,
        verify=verify,
        trust_env=False,
    )


def enroll(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    try:
        return _checked(client.post(f"{API}/enroll", json=body))
    except httpx.HTTPError as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc


def heartbeat(client: httpx.Client, report: dict[str, Any]) -> dict[str, Any]:
    try:
        return _checked(client.post(f"{API}/heartbeat", json=report))
    except httpx.HTTPError as exc:
        raise Unreachable(f"{type(exc).__name__}: {exc}") from exc

"""The agent API's operations (/api/agent/v1): enroll, heartbeat, and artifact downloads.

Every call but enroll is made as a node, with its credential; a node reaches only its own state.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import Router, Status
from ninja.security import HttpBearer

from appliance.api.base import error_responses
from appliance.core.errors import NotAuthenticated, NotFound
from appliance.fleet import heartbeats, services
from appliance.fleet.agent_schemas import EnrollIn, EnrollOut, HeartbeatIn, HeartbeatOut
from appliance.fleet.models import Node

router = Router(tags=["agent"])

CHUNK_BYTES = 1024 * 1024
SHA256 = re.compile(r"^[0-9a-f]{64}$")
RANGE = re.compile(r"^bytes=(\d+)-$")


class NodeAuth(HttpBearer):
    """A node's credential (``nod_…``) as a Bearer token."""

    def authenticate(self, request: HttpRequest, token: str) -> Node | None:
        return services.node_authenticate(credential=token)


def node_of(request: HttpRequest) -> Node:
    node = getattr(request, "auth", None)
    if not isinstance(node, Node):
        raise NotAuthenticated("Send the node's credential as a Bearer token.")
    return node


@router.post("/enroll", auth=None, response={201: EnrollOut, **error_responses(401, 409, 422)})
def enroll(request: HttpRequest, payload: EnrollIn) -> Status[Any]:
    """Exchange a one-time enrollment token for this node's credential."""
    node, credential = services.node_enroll(**payload.dict())
    return Status(
        201,
        {
            "node_id": node.pk,
            "name": node.name,
            "credential": credential,
            "heartbeat_seconds": settings.APPLIANCE_HEARTBEAT_SECONDS,
        },
    )


@router.post("/heartbeat", response={200: HeartbeatOut, **error_responses(401, 422)})
def heartbeat(request: HttpRequest, payload: HeartbeatIn) -> Any:
    """Report GPUs and engines; the answer is the engines this node should run."""
    return heartbeats.node_heartbeat(node=node_of(request), report=payload.dict())


def _chunks(path: Path, offset: int) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(offset)
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


async def _achunks(path: Path, offset: int) -> AsyncIterator[bytes]:
    """For the ASGI server: Django would otherwise read a sync iterator whole into memory."""
    with path.open("rb") as handle:
        handle.seek(offset)
        while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
            yield chunk


@router.get("/blobs/{sha256}", response={200: None, 206: None, **error_responses(401, 404, 416)})
def download_blob(request: HttpRequest, sha256: str) -> HttpResponse | StreamingHttpResponse:
    """A file an engine of this node needs, by sha256; ``Range: bytes=N-`` resumes."""
    node = node_of(request)
    if not SHA256.match(sha256):
        raise NotFound("No such file for this node.")
    path, size = heartbeats.node_blob(node=node, sha256=sha256)
    if not path.is_file():
        raise NotFound("The file is missing on the control plane.", code="blob_missing")
    # Only ``bytes=N-`` (what the agent sends to resume) is honoured; any other Range is
    # ignored and the whole file served, as RFC 9110 allows.
    match = RANGE.match(request.headers.get("Range", ""))
    offset = int(match.group(1)) if match else 0
    if offset and offset >= size:
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    heartbeats.blob_served(node=node, sha256=sha256, size=size, offset=offset)
    body = _achunks(path, offset) if isinstance(request, ASGIRequest) else _chunks(path, offset)
    streamed = StreamingHttpResponse(
        body,
        status=206 if offset else 200,
        content_type="application/octet-stream",
    )
    streamed["Content-Length"] = str(size - offset)
    streamed["Accept-Ranges"] = "bytes"
    if offset:
        streamed["Content-Range"] = f"bytes {offset}-{size - 1}/{size}"
    return streamed

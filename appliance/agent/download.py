"""Resumable, streamed blob downloads from the control plane's agent API.

Model weights are large and node links are not always reliable, so a download appends to a partial
file and the next attempt asks only for the rest (``Range: bytes=N-``). This module does not check
the bytes: the cache hashes the partial file before it becomes a blob.

Errors never carry request headers: the client holds the node's credential.
This module must not import Django.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from appliance.agent.cache import is_sha256

BLOB_URL = "/api/agent/v1/blobs/{sha256}"
MAX_ERROR_BODY = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadFailed(Exception):
    """A blob could not be downloaded now; a partial file, if any, is kept for resuming."""

    def __init__(self, message: str, *, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail


def fetch_blob(client: httpx.Client, sha256: str, partial: Path) -> None:
    """Download blob ``sha256`` into ``partial``, resuming what an earlier attempt left there."""
    if not is_sha256(sha256):
        raise ValueError("sha256 must be 64 lowercase hex")
    try:
        if _download(client, sha256, partial, resume=True):
            return
        # 416: the partial is complete or longer than the blob; neither can be trusted.
        partial.unlink(missing_ok=True)
        _download(client, sha256, partial, resume=False)
    except httpx.HTTPError as exc:
        raise DownloadFailed(
            f"blob {sha256[:12]}…: {type(exc).__name__}: {exc}", detail=str(exc)
        ) from exc


def _download(client: httpx.Client, sha256: str, partial: Path, *, resume: bool) -> bool:
    """One request. False only for a 416 to a resumed request; otherwise done or raises."""
    offset = partial.stat().st_size if resume and partial.exists() else 0
    # identity: a Range counts bytes of the encoded body, so no transparent compression (a
    # server that compresses anyway yields bytes that fail the cache's hash check).
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    url = BLOB_URL.format(sha256=sha256)
    with client.stream("GET", url, headers=headers) as response:
        if response.status_code == httpx.codes.REQUESTED_RANGE_NOT_SATISFIABLE and offset:
            return False
        if response.status_code == httpx.codes.PARTIAL_CONTENT:
            start = _range_start(response.headers.get("Content-Range", ""))
            if start != offset:
                raise DownloadFailed(
                    f"blob {sha256[:12]}…: asked for bytes from {offset}, got {start}",
                    status=response.status_code,
                )
            mode = "ab"
        elif response.status_code == httpx.codes.OK:
            mode = "wb"  # the server ignored the Range: start again
        else:
            detail = _error_detail(response)
            raise DownloadFailed(
                f"blob {sha256[:12]}…: HTTP {response.status_code}"
                + (f": {detail}" if detail else ""),
                status=response.status_code,
                detail=detail,
            )
        with partial.open(mode) as out:
            # As they arrive: a fixed chunk size would buffer, and a dropped link would lose it.
            for chunk in response.iter_bytes():
                out.write(chunk)
    return True


def _range_start(content_range: str) -> int | None:
    """The first byte position of a ``Content-Range: bytes A-B/N`` header, or None."""
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    return int(match.group(1)) if match else None


def _error_detail(response: httpx.Response) -> str | None:
    """The ``detail`` of the control plane's JSON error body, read with a size limit."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > MAX_ERROR_BODY:
            return None
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    return detail if isinstance(detail, str) else None

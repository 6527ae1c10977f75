"""Resumable blob downloads against a mock control plane with real Range semantics."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterator
from functools import partial as bind
from pathlib import Path

import httpx
import pytest

from appliance.agent.cache import ArtifactCache
from appliance.agent.download import DownloadFailed, fetch_blob

BLOB = bytes(range(256)) * 40  # 10 KiB
SHA = hashlib.sha256(BLOB).hexdigest()
TOKEN = "node-secret-token"
BASE = "https://control.example/"


class Interrupted(httpx.SyncByteStream):
    """A body that delivers some bytes, then the connection drops."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.ReadError("connection reset")


class BlobServer:
    """Serves one blob with Range support; can drop the connection or ignore Range."""

    def __init__(self, data: bytes = BLOB, *, cut_at: int | None = None) -> None:
        self.data = data
        self.cut_at = cut_at
        self.ignore_range = False
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != f"/api/agent/v1/blobs/{SHA}":
            return httpx.Response(404, json={"code": "not_found", "detail": "No such blob."})
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"code": "not_authenticated", "detail": "Who?"})
        start, status, headers = 0, 200, {}
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match and not self.ignore_range:
            start = int(match.group(1))
            if start >= len(self.data):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(self.data)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(self.data) - 1}/{len(self.data)}"
        body = self.data[start:]
        if self.cut_at is not None:
            cut, self.cut_at = self.cut_at, None  # drop only the first connection
            return httpx.Response(status, headers=headers, stream=Interrupted(body[:cut]))
        return httpx.Response(status, headers=headers, content=body)


def client_for(server: BlobServer) -> httpx.Client:
    return httpx.Client(
        base_url=BASE,
        transport=httpx.MockTransport(server),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


@pytest.fixture
def partial(tmp_path: Path) -> Path:
    return tmp_path / f"{SHA}.part"


def test_a_fresh_download_writes_the_whole_blob(partial: Path) -> None:
    server = BlobServer()

    fetch_blob(client_for(server), SHA, partial)

    assert partial.read_bytes() == BLOB
    assert "Range" not in server.requests[0].headers


def test_an_interrupted_download_keeps_the_partial_and_resumes(partial: Path) -> None:
    server = BlobServer(cut_at=3000)
    client = client_for(server)

    with pytest.raises(DownloadFailed):
        fetch_blob(client, SHA, partial)
    assert partial.read_bytes() == BLOB[:3000]

    fetch_blob(client, SHA, partial)

    assert server.requests[-1].headers["Range"] == "bytes=3000-"
    assert partial.read_bytes() == BLOB


def test_a_200_answer_to_a_range_request_restarts_from_zero(partial: Path) -> None:
    partial.write_bytes(BLOB[:500])
    server = BlobServer()
    server.ignore_range = True

    fetch_blob(client_for(server), SHA, partial)

    assert partial.read_bytes() == BLOB


def test_a_416_deletes_the_partial_and_downloads_once_more(partial: Path) -> None:
    partial.write_bytes(BLOB + b"junk past the end")
    server = BlobServer()

    fetch_blob(client_for(server), SHA, partial)

    assert partial.read_bytes() == BLOB
    assert [r.headers.get("Range") for r in server.requests] == [f"bytes={len(BLOB) + 17}-", None]


def test_a_206_from_the_wrong_offset_is_refused(partial: Path) -> None:
    partial.write_bytes(BLOB[:100])

    def wrong_range(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Range": f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}"}
        return httpx.Response(206, headers=headers, content=BLOB)

    client = httpx.Client(base_url=BASE, transport=httpx.MockTransport(wrong_range))
    with pytest.raises(DownloadFailed) as caught:
        fetch_blob(client, SHA, partial)

    assert caught.value.status == 206
    assert partial.read_bytes() == BLOB[:100]


def test_an_error_status_carries_the_servers_detail(partial: Path) -> None:
    server = BlobServer()
    client = httpx.Client(base_url=BASE, transport=httpx.MockTransport(server))  # no credential

    with pytest.raises(DownloadFailed) as caught:
        fetch_blob(client, SHA, partial)

    assert caught.value.status == 401
    assert caught.value.detail == "Who?"
    assert "Who?" in str(caught.value)
    assert not partial.exists()


def test_an_error_without_a_json_body_has_no_detail(partial: Path) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad gateway</html>")

    client = httpx.Client(base_url=BASE, transport=httpx.MockTransport(broken))
    with pytest.raises(DownloadFailed) as caught:
        fetch_blob(client, SHA, partial)

    assert caught.value.status == 502
    assert caught.value.detail is None


def test_a_network_error_becomes_download_failed_without_secrets(
    partial: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(
        base_url=BASE,
        transport=httpx.MockTransport(unreachable),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(DownloadFailed) as caught:
        fetch_blob(client, SHA, partial)

    assert caught.value.status is None
    assert TOKEN not in str(caught.value)
    assert TOKEN not in caplog.text


def test_a_sha256_that_is_not_hex_is_refused_before_any_request(partial: Path) -> None:
    server = BlobServer()

    with pytest.raises(ValueError, match="64 lowercase hex"):
        fetch_blob(client_for(server), "../../admin", partial)

    assert server.requests == []


def test_the_cache_resumes_through_fetch_blob_and_verifies(tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache")
    server = BlobServer(cut_at=7000)
    fetch = bind(fetch_blob, client_for(server))
    files = [{"path": "model.safetensors", "size": len(BLOB), "sha256": SHA}]

    with pytest.raises(DownloadFailed):
        cache.ensure(files, fetch)
    cache.ensure(files, fetch)

    assert server.requests[-1].headers["Range"] == "bytes=7000-"
    assert cache.materialize("e" * 64, files).joinpath("model.safetensors").read_bytes() == BLOB

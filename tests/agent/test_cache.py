"""The agent's artifact cache: verified downloads, tamper detection, safe paths, atomic builds."""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from appliance.agent.cache import ArtifactCache, ArtifactMismatch, FileRef, InvalidFileRef

CONFIG = b'{"model_type": "llama"}'
WEIGHTS = b"\x00\x01weights" * 1000
DIGEST = "d" * 64


def ref(path: str, content: bytes) -> dict[str, Any]:
    return {"path": path, "size": len(content), "sha256": hashlib.sha256(content).hexdigest()}


FILES = [ref("config.json", CONFIG), ref("weights/model.safetensors", WEIGHTS)]


class FakeServer:
    """A fetch callable serving blobs by sha256, appending to the partial like a resumed GET."""

    def __init__(self, blobs: dict[str, bytes], fail_after: int | None = None) -> None:
        self.blobs = blobs
        self.fail_after = fail_after
        self.calls: list[tuple[str, int]] = []

    def __call__(self, sha256: str, partial: Path) -> None:
        offset = partial.stat().st_size if partial.exists() else 0
        self.calls.append((sha256, offset))
        rest = self.blobs[sha256][offset:]
        with partial.open("ab") as out:
            if self.fail_after is not None:
                out.write(rest[: self.fail_after])
                raise ConnectionError("link dropped")
            out.write(rest)


def server_for(*contents: bytes) -> FakeServer:
    return FakeServer({hashlib.sha256(c).hexdigest(): c for c in contents})


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache")


def test_ensure_stores_read_only_blobs_in_private_dirs(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))

    blob = cache.blob_path(FILES[1]["sha256"])
    assert blob.read_bytes() == WEIGHTS
    assert stat.S_IMODE(blob.stat().st_mode) == 0o400
    assert stat.S_IMODE(blob.parent.stat().st_mode) == 0o700
    assert blob.parent == cache.root / "blobs" / "sha256" / FILES[1]["sha256"][:2]
    assert list((cache.root / "partial").iterdir()) == []


def test_ensure_is_idempotent(cache: ArtifactCache) -> None:
    server = server_for(CONFIG, WEIGHTS)
    cache.ensure(FILES, server)
    cache.ensure(FILES, server)

    assert len(server.calls) == 2  # one download per blob, none the second time
    assert cache.verify(FILES) == []


def test_ensure_downloads_shared_content_once(cache: ArtifactCache) -> None:
    server = server_for(CONFIG)
    cache.ensure([ref("a.json", CONFIG), ref("b/a.json", CONFIG)], server)

    assert len(server.calls) == 1


def test_ensure_resumes_an_interrupted_download(cache: ArtifactCache) -> None:
    sha = FILES[1]["sha256"]
    flaky = FakeServer({sha: WEIGHTS}, fail_after=4000)
    with pytest.raises(ConnectionError):
        cache.ensure(FILES[1:], flaky)
    assert cache.partial_path(sha).stat().st_size == 4000
    assert not cache.blob_path(sha).exists()

    server = FakeServer({sha: WEIGHTS})
    cache.ensure(FILES[1:], server)

    assert server.calls == [(sha, 4000)]
    assert cache.blob_path(sha).read_bytes() == WEIGHTS


def test_ensure_refuses_a_mismatch_and_removes_the_partial(cache: ArtifactCache) -> None:
    sha = FILES[0]["sha256"]
    liar = FakeServer({sha: b"not the config", FILES[1]["sha256"]: WEIGHTS})

    with pytest.raises(ArtifactMismatch) as caught:
        cache.ensure(FILES, liar)

    assert caught.value.paths == ["config.json"]
    assert not cache.blob_path(sha).exists()
    assert not cache.partial_path(sha).exists()
    assert cache.blob_path(FILES[1]["sha256"]).exists()  # the good file was kept


def test_ensure_refuses_a_size_mismatch(cache: ArtifactCache) -> None:
    wrong_size = {**FILES[0], "size": len(CONFIG) + 1}

    with pytest.raises(ArtifactMismatch) as caught:
        cache.ensure([wrong_size], server_for(CONFIG))

    assert caught.value.paths == ["config.json"]
    assert not cache.blob_path(FILES[0]["sha256"]).exists()


@pytest.mark.parametrize(
    "path",
    ["/etc/passwd", "../escape", "a/../../escape", "a//b", "a/./b", "", "dir/", "a\\b"],
)
def test_unsafe_paths_are_refused_before_any_download(cache: ArtifactCache, path: str) -> None:
    server = server_for(CONFIG)

    with pytest.raises(InvalidFileRef):
        cache.ensure([FILES[0], {**FILES[0], "path": path}], server)

    assert server.calls == []
    assert not cache.root.exists()


@pytest.mark.parametrize(
    "files",
    [
        [{"path": "x", "size": 1, "sha256": "../" + "a" * 61}],
        [{"path": "x", "size": -1, "sha256": "a" * 64}],
        [{"path": "x", "sha256": "a" * 64}],
        [ref("x", CONFIG), ref("x", WEIGHTS)],
        [ref("x", CONFIG), ref("x/y", WEIGHTS)],
    ],
    ids=["bad-sha", "negative-size", "no-size", "duplicate", "file-and-dir"],
)
def test_malformed_file_lists_are_refused(cache: ArtifactCache, files: list[Any]) -> None:
    with pytest.raises(InvalidFileRef):
        cache.verify(files)


def test_materialize_builds_a_directory_of_symlinks_to_blobs(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))

    directory = cache.materialize(DIGEST, FILES)

    assert directory == cache.root / "artifacts" / DIGEST
    weights = directory / "weights" / "model.safetensors"
    assert weights.is_symlink()
    assert not os.path.isabs(os.readlink(weights))
    assert weights.resolve() == cache.blob_path(FILES[1]["sha256"]).resolve()
    assert (directory / "config.json").read_bytes() == CONFIG


def test_materialize_replaces_an_existing_directory(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))
    directory = cache.materialize(DIGEST, FILES)
    (directory / "stray.txt").write_text("left over")

    again = cache.materialize(DIGEST, FILES[:1])

    assert sorted(p.name for p in again.iterdir()) == ["config.json"]
    assert [p.name for p in (cache.root / "artifacts").iterdir()] == [DIGEST]


def test_verify_detects_a_tampered_blob_with_unchanged_mtime(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))
    blob = cache.blob_path(FILES[0]["sha256"])
    before = blob.stat()
    blob.chmod(0o600)
    blob.write_bytes(CONFIG.replace(b"llama", b"LLAMA"))  # same size
    os.utime(blob, ns=(before.st_atime_ns, before.st_mtime_ns))

    assert cache.verify(FILES) == ["config.json"]


def test_materialize_removes_a_tampered_blob_and_refuses(cache: ArtifactCache) -> None:
    server = server_for(CONFIG, WEIGHTS)
    cache.ensure(FILES, server)
    blob = cache.blob_path(FILES[1]["sha256"])
    blob.chmod(0o600)
    blob.write_bytes(b"tampered")

    with pytest.raises(ArtifactMismatch) as caught:
        cache.materialize(DIGEST, FILES)

    assert caught.value.paths == ["weights/model.safetensors"]
    assert not blob.exists()
    assert not (cache.root / "artifacts" / DIGEST).exists()
    cache.ensure(FILES, server)  # the next ensure fetches a fresh copy
    assert cache.materialize(DIGEST, FILES).is_dir()


def test_materialize_refuses_missing_blobs(cache: ArtifactCache) -> None:
    with pytest.raises(ArtifactMismatch) as caught:
        cache.materialize(DIGEST, FILES)

    assert caught.value.paths == ["config.json", "weights/model.safetensors"]


def test_materialize_refuses_a_digest_that_is_not_hex(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))

    with pytest.raises(InvalidFileRef):
        cache.materialize("../../etc", FILES)


def test_prune_removes_only_unlisted_artifacts(cache: ArtifactCache) -> None:
    cache.ensure(FILES, server_for(CONFIG, WEIGHTS))
    keep, drop = "a" * 64, "b" * 64
    cache.materialize(keep, FILES)
    cache.materialize(drop, FILES)

    assert cache.prune({keep}) == [drop]

    assert [p.name for p in (cache.root / "artifacts").iterdir()] == [keep]
    assert cache.verify(FILES) == []  # blobs stay


def test_file_refs_accept_dataclasses_and_dicts(cache: ArtifactCache) -> None:
    cache.ensure([FileRef(**FILES[0])], server_for(CONFIG))

    assert cache.verify([FileRef(**FILES[0]), {**FILES[0], "path": "copy.json"}]) == []


@pytest.mark.parametrize("name", ["cache", "download", "metrics", "backoff"])
def test_agent_modules_import_neither_django_nor_the_control_plane(name: str) -> None:
    module = importlib.import_module(f"appliance.agent.{name}")
    tree = ast.parse(Path(str(module.__file__)).read_text(encoding="utf-8"))
    imported = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]

    assert imported
    assert [n for n in imported if n.split(".")[0] == "django"] == []
    assert [
        n for n in imported if n.startswith("appliance") and not n.startswith("appliance.agent")
    ] == []

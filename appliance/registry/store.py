"""The content-addressed artifact store: ``blobs/sha256/ab/abcdef…`` under the artifact root.

Files are hashed while they are copied, written to a temporary name and renamed into place, so a
blob's name is always the hash of its bytes and identical files are stored once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rfc8785

CHUNK_BYTES = 1024 * 1024
ProgressFn = Callable[[int], None]


def hash_file(path: Path, on_bytes: ProgressFn | None = None) -> tuple[str, int]:
    """sha256 hex and size of a file, reading it in chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest(), size


def manifest_digest(files: list[dict[str, Any]]) -> str:
    """sha256 of the RFC 8785 form of the sorted file list: the identity of a file set."""
    ordered = sorted(files, key=lambda f: f["path"])
    return hashlib.sha256(rfc8785.dumps(ordered)).hexdigest()


class ArtifactStore:
    """Blobs by sha256 under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def ingest(self, source: Path, on_bytes: ProgressFn | None = None) -> tuple[str, int]:
        """Copy a file in, hashing as it goes; an existing identical blob is kept, not duplicated."""
        tmp_dir = self.root / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=tmp_dir)
        try:
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                while chunk := src.read(CHUNK_BYTES):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if on_bytes:
                        on_bytes(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            sha256 = digest.hexdigest()
            target = self.blob_path(sha256)
            if target.exists():
                os.unlink(tmp_name)
            else:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.chmod(tmp_name, 0o400)
                os.replace(tmp_name, target)
        except BaseException:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
            raise
        return sha256, size


def remove_tree(path: Path) -> None:
    """Remove a staging directory, whatever is in it."""
    shutil.rmtree(path, ignore_errors=True)

"""The node's content-addressed artifact cache: what a deployment needs, verified before use.

Layout under ``root`` (directories 0o700):

* ``blobs/sha256/ab/abcdef…`` — one read-only (0o400) file per distinct content;
* ``partial/<sha256>.part`` — a download in progress, resumed by the next attempt;
* ``artifacts/<digest>/<path>`` — a model directory as vLLM reads it, whose entries are relative
  symlinks to the blobs, so identical files are stored once and the tree can be mounted elsewhere.

A blob is renamed into place only after its sha256 and size match, and an artifact directory is
only (re)built after every blob has been hashed again: the engine never starts on unverified files.
File lists come from the control plane and are checked before anything touches the disk, so a
malicious answer cannot write outside the cache.

This module must not import Django.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 1024 * 1024
DIR_MODE = 0o700
BLOB_MODE = 0o400
_HEX64 = re.compile(r"[0-9a-f]{64}")

# fetch(sha256, partial): append to (or restart) the partial file until it holds the whole blob.
Fetch = Callable[[str, Path], None]


class InvalidFileRef(ValueError):
    """A file reference that must not be acted on: a bad path, hash or size."""


class ArtifactMismatch(Exception):
    """Files whose bytes are missing or differ from their sha256/size; they were not used."""

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = sorted(set(paths))
        super().__init__("sha256/size mismatch: " + ", ".join(self.paths))


def is_sha256(value: object) -> bool:
    """Whether ``value`` is a lowercase 64-hex sha256, the only form used in paths and URLs."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def _check_path(path: object) -> str:
    """A relative POSIX path with no empty, ``.`` or ``..`` parts, or InvalidFileRef."""
    if not isinstance(path, str) or not path:
        raise InvalidFileRef(f"path must be a non-empty string: {path!r}")
    if path.startswith("/") or "\\" in path or "\0" in path:
        raise InvalidFileRef(f"path must be relative and POSIX: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise InvalidFileRef(f"path has an empty, '.' or '..' part: {path!r}")
    return path


@dataclass(frozen=True)
class FileRef:
    """One file of an artifact: where it goes, how big it is, and the hash of its bytes."""

    path: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        _check_path(self.path)
        if not is_sha256(self.sha256):
            raise InvalidFileRef(f"{self.path}: sha256 must be 64 lowercase hex")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidFileRef(f"{self.path}: size must be a non-negative integer")

    @classmethod
    def from_dict(cls, item: Mapping[str, Any]) -> FileRef:
        try:
            return cls(path=item["path"], size=item["size"], sha256=item["sha256"])
        except KeyError as exc:
            raise InvalidFileRef(f"file reference lacks {exc.args[0]!r}") from exc


FileLike = FileRef | Mapping[str, Any]


def file_refs(files: Iterable[FileLike]) -> list[FileRef]:
    """Validate a whole file list up front, including clashes that only show in combination."""
    refs = [f if isinstance(f, FileRef) else FileRef.from_dict(f) for f in files]
    paths = [ref.path for ref in refs]
    if len(set(paths)) != len(paths):
        raise InvalidFileRef("duplicate paths in file list")
    parents = {"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)}
    if clashes := parents.intersection(paths):
        raise InvalidFileRef(f"paths used as both file and directory: {sorted(clashes)}")
    return refs


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex and size, streamed; also fsyncs, so a renamed blob is durable."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest(), size


class ArtifactCache:
    """Blobs by sha256 and artifact directories built from them, under one private root."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def blob_path(self, sha256: str) -> Path:
        if not is_sha256(sha256):
            raise InvalidFileRef("sha256 must be 64 lowercase hex")
        return self.root / "blobs" / "sha256" / sha256[:2] / sha256

    def partial_path(self, sha256: str) -> Path:
        return self.root / "partial" / f"{self.blob_path(sha256).name}.part"

    def artifact_path(self, digest: str) -> Path:
        if not is_sha256(digest):
            raise InvalidFileRef("artifact digest must be 64 lowercase hex")
        return self.root / "artifacts" / digest

    def ensure(self, files: Iterable[FileLike], fetch: Fetch) -> None:
        """Download every missing blob; a download that does not match is deleted and refused.

        Errors from ``fetch`` propagate with the partial file kept, so the next call resumes.
        """
        by_sha: dict[str, list[FileRef]] = {}
        for ref in file_refs(files):
            by_sha.setdefault(ref.sha256, []).append(ref)
        bad: list[str] = []
        for sha256, refs in by_sha.items():
            blob = self.blob_path(sha256)
            if blob.exists():
                continue
            partial = self.partial_path(sha256)
            self._private_dir(partial.parent)
            fetch(sha256, partial)
            got_sha, got_size = hash_file(partial)
            if got_sha != sha256 or any(ref.size != got_size for ref in refs):
                partial.unlink(missing_ok=True)
                bad.extend(ref.path for ref in refs)
                continue
            self._private_dir(blob.parent)
            os.chmod(partial, BLOB_MODE)
            os.replace(partial, blob)
        if bad:
            raise ArtifactMismatch(bad)

    def verify(self, files: Iterable[FileLike]) -> list[str]:
        """Paths whose blob is missing or differs. Every blob is re-hashed: mtimes can lie."""
        hashed: dict[str, tuple[str, int] | None] = {}
        bad = []
        for ref in file_refs(files):
            if ref.sha256 not in hashed:
                blob = self.blob_path(ref.sha256)
                # A symlink or directory planted in the cache is not a blob.
                regular = blob.is_file() and not blob.is_symlink()
                hashed[ref.sha256] = hash_file(blob) if regular else None
            if hashed[ref.sha256] != (ref.sha256, ref.size):
                bad.append(ref.path)
        return sorted(bad)

    def materialize(self, digest: str, files: Iterable[FileLike]) -> Path:
        """The verified artifact directory for ``digest``, rebuilt from the blobs.

        On any mismatch the bad blobs are deleted, so the next ``ensure`` fetches fresh copies.
        """
        target = self.artifact_path(digest)
        refs = file_refs(files)
        if bad := self.verify(refs):
            bad_shas = {ref.sha256 for ref in refs if ref.path in bad}
            for sha256 in bad_shas:
                self.blob_path(sha256).unlink(missing_ok=True)
            raise ArtifactMismatch(bad)
        self._private_dir(target.parent)
        build = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".build-{digest[:12]}-"))
        try:
            for ref in refs:
                link = build / ref.path
                self._private_dir(link.parent)
                # Relative to where the link will live once renamed: same depth as in ``build``.
                final_dir = target / ref.path.rpartition("/")[0]
                link.symlink_to(os.path.relpath(self.blob_path(ref.sha256), final_dir))
            self._swap_in(build, target)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
        return target

    def prune(self, keep_digests: set[str]) -> list[str]:
        """Remove artifact directories (and leftover builds) not in ``keep_digests``.

        Blobs stay: another artifact may share them. Returns the names removed.
        """
        artifacts = self.root / "artifacts"
        if not artifacts.is_dir():
            return []
        removed = []
        for entry in sorted(artifacts.iterdir()):
            if entry.name in keep_digests:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry.name)
        return removed

    def _swap_in(self, build: Path, target: Path) -> None:
        """Rename ``build`` to ``target``; an existing target is moved aside first, then removed."""
        if not target.exists() and not target.is_symlink():
            os.rename(build, target)
            return
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".old-{target.name[:12]}-"))
        os.replace(target, old / "tree")
        os.rename(build, target)
        shutil.rmtree(old, ignore_errors=True)

    def _private_dir(self, path: Path) -> None:
        """Create ``path`` and its parents below the root with mode 0o700."""
        self.root.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        current = self.root
        for part in path.relative_to(self.root).parts:
            current = current / part
            current.mkdir(exist_ok=True, mode=DIR_MODE)

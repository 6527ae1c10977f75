"""Safe extraction of an uploaded adapter archive (.tar, .tar.gz/.tgz or .zip) into staging.

Uploads are untrusted: every member name is checked before anything is written, links, devices and
duplicates are refused, sizes are capped both as declared and as actually written (a zip bomb may
lie), archive modes are ignored, and a failed extraction leaves nothing behind.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.core.errors import PayloadTooLarge, ValidationFailed

_CHUNK = 1024 * 1024
# What a corrupt archive may raise from the standard library while it is being read.
try:
    from lzma import LZMAError as _LZMAError
except ImportError:  # pragma: no cover - Python built without lzma
    _LZMAError = zlib.error  # type: ignore[misc,assignment]
_READ_ERRORS: tuple[type[BaseException], ...] = (
    _LZMAError,
    tarfile.TarError,
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
)


@dataclass(frozen=True)
class _Member:
    """One archive entry after its name has been checked: where it goes and how to read it."""

    parts: tuple[str, ...]
    is_dir: bool
    size: int
    open: Callable[[], Callable[[int], bytes]]


def _unsafe(name: str, problem: str) -> ValidationFailed:
    return ValidationFailed(f"Archive member {name!r} {problem}.", code="unsafe_archive")


def _bad_archive(exc: BaseException) -> ValidationFailed:
    return ValidationFailed(f"The archive is corrupt or truncated: {exc}.", code="bad_archive")


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of a member name, refusing anything that could land outside dest.

    ``./`` prefixes and trailing slashes are normal in tar files and are dropped; an empty result
    means the entry is the archive root itself.
    """
    if "\x00" in name:
        raise _unsafe(name, "contains a NUL byte")
    if "\\" in name:
        raise _unsafe(name, "contains a backslash; use / as the path separator")
    if name.startswith("/"):
        raise _unsafe(name, "has an absolute path")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _unsafe(name, "contains a '..' path component")
    return parts


def _declared_size(member: _Member) -> int:
    """The size the archive claims for a member (its own function so tests can make it lie)."""
    return member.size


class _Plan:
    """Collects checked members and refuses duplicates, file/directory clashes and excess."""

    def __init__(self, *, max_total_bytes: int, max_files: int) -> None:
        self.max_total_bytes = max_total_bytes
        self.max_files = max_files
        self.members: list[_Member] = []
        self.files: set[tuple[str, ...]] = set()
        self.explicit_dirs: set[tuple[str, ...]] = set()
        self.implied_dirs: set[tuple[str, ...]] = set()
        self.declared_total = 0

    def count(self, total: int) -> None:
        if total > self.max_files:
            raise PayloadTooLarge(
                f"The archive holds more than {self.max_files} entries.", code="archive_too_large"
            )

    def add(self, name: str, member: _Member) -> None:
        self.count(len(self.members) + 1)
        parts = member.parts
        if not parts:
            if not member.is_dir:
                raise _unsafe(name, "has an empty path")
            return  # the archive root, e.g. "./"
        for i in range(1, len(parts)):
            if parts[:i] in self.files:
                raise _unsafe(name, f"is inside {'/'.join(parts[:i])!r}, which is a file")
        if parts in self.files:
            raise _unsafe(name, "appears more than once")
        if member.is_dir:
            if parts in self.explicit_dirs:
                raise _unsafe(name, "appears more than once")
            self.explicit_dirs.add(parts)
        else:
            if parts in self.explicit_dirs or parts in self.implied_dirs:
                raise _unsafe(name, "is a file with the same path as a directory")
            self.files.add(parts)
            if member.size < 0:
                raise _unsafe(name, "declares a negative size")
            self.declared_total += _declared_size(member)
            if self.declared_total > self.max_total_bytes:
                raise PayloadTooLarge(
                    f"The archive unpacks to more than {self.max_total_bytes} bytes.",
                    code="archive_too_large",
                )
        for i in range(1, len(parts)):
            self.implied_dirs.add(parts[:i])
        self.members.append(member)


def _tar_member(tf: tarfile.TarFile, info: tarfile.TarInfo) -> _Member:
    """Check a tar entry's type; only regular files and directories are extracted."""
    name = info.name
    if info.issym():
        raise _unsafe(name, f"is a symbolic link (to {info.linkname!r})")
    if info.islnk():
        raise _unsafe(name, f"is a hard link (to {info.linkname!r})")
    if info.ischr() or info.isblk():
        raise _unsafe(name, "is a device file")
    if info.isfifo():
        raise _unsafe(name, "is a fifo")
    if info.issparse():
        raise _unsafe(name, "is a sparse file")
    if not (info.isreg() or info.isdir()):
        raise _unsafe(name, f"has unsupported tar type {info.type!r}")

    def opener() -> Callable[[int], bytes]:
        fh = tf.extractfile(info)
        if fh is None:  # pragma: no cover - isreg() members always have a file object
            raise _unsafe(name, "could not be read")
        return fh.read

    return _Member(_safe_parts(name), info.isdir(), info.size if info.isreg() else 0, opener)


def _plan_tar(tf: tarfile.TarFile, plan: _Plan) -> None:
    """Read every tar header (stopping early at the caps) before anything is written."""
    while True:
        try:
            info = tf.next()
        except _READ_ERRORS as exc:
            raise _bad_archive(exc) from exc
        if info is None:
            return
        plan.add(info.name, _tar_member(tf, info))


def _plan_zip(zf: zipfile.ZipFile, plan: _Plan) -> None:
    """Check every zip entry from the central directory before anything is written."""
    infos = zf.infolist()
    plan.count(len(infos))
    for info in infos:
        name = info.filename
        if info.flag_bits & 0x1:
            raise ValidationFailed(
                f"Archive member {name!r} is encrypted; upload an unencrypted archive.",
                code="unsupported_archive",
            )
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if info.create_system == 3 and kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if kind == stat.S_IFLNK else "a device, fifo or socket"
            raise _unsafe(name, f"is {what}")
        is_dir = info.is_dir() or kind == stat.S_IFDIR

        def opener(info: zipfile.ZipInfo = info) -> Callable[[int], bytes]:
            try:
                return zf.open(info).read
            except NotImplementedError as exc:
                raise ValidationFailed(
                    f"Archive member {info.filename!r} uses an unsupported compression method.",
                    code="unsupported_archive",
                ) from exc

        plan.add(name, _Member(_safe_parts(name), is_dir, 0 if is_dir else info.file_size, opener))


class _Capped(io.RawIOBase):
    """A read-only view of a (decompressed) tar stream that refuses to go past a limit.

    tarfile reads GNU long-name and pax headers into memory whole, at whatever size they declare;
    capping the stream bounds that memory and the decompression work of a tar.gz bomb.
    """

    def __init__(self, raw: io.BufferedIOBase, limit: int, max_total_bytes: int) -> None:
        super().__init__()
        self._raw = raw
        self._limit = limit
        self._max_total_bytes = max_total_bytes

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The archive unpacks to more than {self._max_total_bytes} bytes.",
            code="archive_too_large",
        )

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        position = self._raw.tell()
        if size is None or size < 0:
            size = self._limit - position + 1
        if position + size > self._limit:
            raise self._too_large()
        return self._raw.read(size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET and offset > self._limit:
            raise self._too_large()
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()


def _open_stream(archive: Path) -> io.BufferedIOBase:
    """The archive's bytes, gunzipped (or bunzipped, unxz-ed) when its magic number says so."""
    with archive.open("rb") as fh:
        magic = fh.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.open(archive, "rb")
    if magic.startswith(b"BZh"):
        import bz2

        return bz2.open(archive, "rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        import lzma

        return lzma.open(archive, "rb")
    return archive.open("rb")


def _open_tar(stream: io.BufferedIOBase, plan: _Plan) -> tarfile.TarFile | None:
    """The stream as a tar archive (its first header read), or None when it is not a tar."""
    # Headers take a few 512-byte blocks per member; the slack covers long names and padding.
    limit = plan.max_total_bytes + plan.max_files * 4 * 512 + 1024 * 1024
    capped = _Capped(stream, limit, plan.max_total_bytes)
    try:
        return tarfile.open(fileobj=capped, mode="r:")
    except tarfile.ReadError:
        return None
    except _READ_ERRORS as exc:
        raise _bad_archive(exc) from exc


def _make_dir(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def _write(dest: Path, plan: _Plan) -> None:
    """Create the planned directories and files, counting real bytes against the cap."""
    dest_real = dest.resolve(strict=True)
    written = 0
    for member in plan.members:
        target = dest.joinpath(*member.parts)
        for i in range(1, len(member.parts)):
            _make_dir(dest.joinpath(*member.parts[:i]))
        if not target.parent.resolve(strict=True).is_relative_to(dest_real):
            raise _unsafe("/".join(member.parts), "resolves outside the destination")
        if member.is_dir:
            _make_dir(target)
            continue
        try:
            read = member.open()
        except _READ_ERRORS as exc:
            raise _bad_archive(exc) from exc
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(target, flags, 0o600)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)
            while True:
                try:
                    chunk = read(_CHUNK)
                except _READ_ERRORS as exc:
                    raise _bad_archive(exc) from exc
                if not chunk:
                    break
                written += len(chunk)
                if written > plan.max_total_bytes:
                    raise PayloadTooLarge(
                        f"The archive unpacks to more than {plan.max_total_bytes} bytes.",
                        code="archive_too_large",
                    )
                out.write(chunk)


@contextmanager
def _removed_on_failure(dest: Path) -> Iterator[None]:
    """Any exception, including KeyboardInterrupt, removes dest so no partial upload survives."""
    try:
        yield
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def extract_archive(
    archive: Path, dest: Path, *, max_total_bytes: int, max_files: int = 1000
) -> Path:
    """Extract archive into dest (which must not exist) and return the adapter's root.

    The root is the single top-level directory when the archive holds only that (adapters are
    often packed as ``my-adapter/...``), else dest. Files are 0600 and directories 0700.
    """
    dest.mkdir(mode=0o700)  # raises FileExistsError: never write into, or delete, an existing path
    with _removed_on_failure(dest):
        os.chmod(dest, 0o700)
        plan = _Plan(max_total_bytes=max_total_bytes, max_files=max_files)
        with _open_stream(archive) as stream:
            tf = _open_tar(stream, plan)
            if tf is not None:
                with tf:
                    _plan_tar(tf, plan)
                    _finish(dest, plan)
        if tf is None:
            if not zipfile.is_zipfile(archive):
                raise ValidationFailed(
                    f"{archive.name} is not a tar, tar.gz or zip archive.",
                    code="unsupported_archive",
                )
            try:
                zf = zipfile.ZipFile(archive)
            except _READ_ERRORS as exc:
                raise _bad_archive(exc) from exc
            with zf:
                _plan_zip(zf, plan)
                _finish(dest, plan)
        entries = list(dest.iterdir())
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            return entries[0]
        return dest


def _finish(dest: Path, plan: _Plan) -> None:
    if not plan.files:
        raise ValidationFailed("The archive contains no files.", code="empty_archive")
    _write(dest, plan)

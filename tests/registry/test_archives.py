"""Adapter archive extraction: only plain files and directories, capped, nothing left on failure."""

from __future__ import annotations

import gzip
import io
import stat
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from appliance.core.errors import DomainError, PayloadTooLarge, ValidationFailed
from appliance.registry import archives
from appliance.registry.archives import extract_archive

MB = 1024 * 1024


def file_info(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, io.BytesIO(data)


def write_tar(
    path: Path,
    members: Sequence[tarfile.TarInfo | tuple[str, bytes]],
    mode: Literal["w", "w:gz"],
) -> Path:
    """A tar archive from (name, data) files and raw TarInfo entries (dirs, links, devices)."""
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                tf.addfile(*file_info(*member))
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755
    return info


def write_zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


ADAPTER = [
    ("my-adapter/adapter_config.json", b'{"peft_type": "LORA"}'),
    ("my-adapter/adapter_model.safetensors", b"\0" * 64),
    ("my-adapter/docs/README.md", b"hello"),
]
FLAT = [("adapter_config.json", b"{}"), ("adapter_model.safetensors", b"\0" * 64)]


def refused(error: DomainError, dest: Path) -> str:
    """The error code, after checking the detail is a sentence and nothing was left behind."""
    assert len(error.detail) > 10
    assert not dest.exists()
    return error.code


@pytest.mark.parametrize("mode", ["w:gz", "w"])
def test_tar_with_one_top_level_dir_returns_that_dir(
    tmp_path: Path, mode: Literal["w", "w:gz"]
) -> None:
    archive = write_tar(tmp_path / "a.tgz", ADAPTER, mode)
    dest = tmp_path / "stage"
    root = extract_archive(archive, dest, max_total_bytes=MB)
    assert root == dest / "my-adapter"
    assert (root / "adapter_config.json").read_bytes() == b'{"peft_type": "LORA"}'
    assert (root / "docs" / "README.md").read_bytes() == b"hello"


def test_tar_with_several_top_level_entries_returns_dest(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar.gz", FLAT, "w:gz")
    dest = tmp_path / "stage"
    assert extract_archive(archive, dest, max_total_bytes=MB) == dest
    assert sorted(p.name for p in dest.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_tar_with_dot_slash_names_and_dir_entries_is_accepted(tmp_path: Path) -> None:
    members: list[tarfile.TarInfo | tuple[str, bytes]] = [
        tar_entry("./", tarfile.DIRTYPE),
        tar_entry("./my-adapter/", tarfile.DIRTYPE),
        ("./my-adapter/adapter_config.json", b"{}"),
    ]
    archive = write_tar(tmp_path / "a.tar", members, "w")
    dest = tmp_path / "stage"
    assert extract_archive(archive, dest, max_total_bytes=MB) == dest / "my-adapter"


def test_archive_modes_are_not_trusted(tmp_path: Path) -> None:
    dangerous = stat.S_ISUID | 0o777
    archive = tmp_path / "a.tar"
    with tarfile.open(archive, "w") as tf:
        tf.addfile(tar_entry("d", tarfile.DIRTYPE))
        tf.addfile(*file_info("d/run.sh", b"#!/bin/sh\n", mode=dangerous))
        tf.addfile(*file_info("top.txt", b"x", mode=dangerous))
    dest = tmp_path / "stage"
    extract_archive(archive, dest, max_total_bytes=MB)
    assert stat.S_IMODE((dest / "d" / "run.sh").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "top.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o700
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700


def test_zip_with_one_top_level_dir_returns_that_dir(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", ADAPTER)
    dest = tmp_path / "stage"
    root = extract_archive(archive, dest, max_total_bytes=MB)
    assert root == dest / "my-adapter"
    assert (root / "adapter_model.safetensors").read_bytes() == b"\0" * 64
    assert stat.S_IMODE((root / "docs" / "README.md").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "docs").stat().st_mode) == 0o700


def test_zip_with_several_top_level_entries_returns_dest(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "upload.bin", [*FLAT, ("sub/x.txt", b"x")])
    dest = tmp_path / "stage"
    assert extract_archive(archive, dest, max_total_bytes=MB) == dest
    assert (dest / "sub" / "x.txt").read_bytes() == b"x"


def test_zip_with_one_top_level_file_returns_dest(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", [("adapter_config.json", b"{}")])
    dest = tmp_path / "stage"
    assert extract_archive(archive, dest, max_total_bytes=MB) == dest


@pytest.mark.parametrize("name", ["/etc/cron.d/evil", "../evil", "a/../../evil", "a\\..\\evil"])
def test_tar_with_unsafe_path_is_refused_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    archive = write_tar(tmp_path / "a.tgz", [("ok.txt", b"ok"), (name, b"x")], "w:gz")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"
    assert repr(name) in exc_info.value.detail
    assert not (tmp_path / "evil").exists()


def test_tar_with_parent_traversal_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar", [("../../outside.txt", b"x")], "w")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"
    assert "'..'" in exc_info.value.detail


@pytest.mark.parametrize("name", ["/abs.txt", "../up.txt", "a/../../up.txt"])
def test_zip_with_unsafe_path_is_refused_and_leaves_nothing(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr(zipfile.ZipInfo(name), b"x")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (tar_entry("link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (tar_entry("hard", tarfile.LNKTYPE, "ok.txt"), "hard link"),
        (tar_entry("dev", tarfile.CHRTYPE), "device"),
        (tar_entry("blk", tarfile.BLKTYPE), "device"),
        (tar_entry("pipe", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_tar_with_link_or_special_member_is_refused_and_leaves_nothing(
    tmp_path: Path, entry: tarfile.TarInfo, words: str
) -> None:
    archive = write_tar(tmp_path / "a.tar", [("ok.txt", b"ok"), entry], "w")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"
    assert words in exc_info.value.detail
    assert repr(entry.name) in exc_info.value.detail


def test_zip_with_symlink_member_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        zf.writestr(link, "/etc/passwd")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"
    assert "symbolic link" in exc_info.value.detail


def test_tar_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar", [("a/x.txt", b"1"), ("a/./x.txt", b"2")], "w")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"
    assert "more than once" in exc_info.value.detail


def test_zip_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate we want
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("x.txt", b"1")
            zf.writestr("x.txt", b"2")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"


@pytest.mark.parametrize(
    "names",
    [["a", "a/b"], ["a/b", "a"], ["a/b/c", "a/b"]],
    ids=["file-then-child", "child-first", "deep"],
)
def test_tar_with_file_and_directory_at_same_path_is_refused(
    tmp_path: Path, names: list[str]
) -> None:
    archive = write_tar(tmp_path / "a.tar", [(n, b"x") for n in names], "w")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsafe_archive"


def test_tar_with_too_many_files_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tgz", [(f"f{i}", b"") for i in range(6)], "w:gz")
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB, max_files=5)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_zip_with_too_many_files_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", [(f"f{i}", b"") for i in range(6)])
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB, max_files=5)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_tar_declaring_too_many_bytes_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tgz", [("a", b"x" * 600), ("b", b"y" * 600)], "w:gz")
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=1000)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_zip_declaring_too_many_bytes_is_refused(tmp_path: Path) -> None:
    archive = write_zip(tmp_path / "a.zip", [("bomb", b"\0" * 10_000)])
    assert archive.stat().st_size < 1000
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=1000)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_write_time_cap_holds_when_declared_sizes_lie(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archives, "_declared_size", lambda member: 0)
    archive = write_tar(tmp_path / "a.tgz", [("a", b"x" * 600), ("b", b"y" * 600)], "w:gz")
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=1000)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_zip_whose_declared_size_lies_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    data = b"A" * 5000
    archive = write_zip(tmp_path / "a.zip", [("big.bin", data)])
    raw = bytearray(archive.read_bytes())
    # Patch the uncompressed size in the local header (offset 22) and central directory (24).
    local = raw.find(b"PK\x03\x04")
    central = raw.find(b"PK\x01\x02")
    struct.pack_into("<I", raw, local + 22, 10)
    struct.pack_into("<I", raw, central + 24, 10)
    archive.write_bytes(bytes(raw))
    assert zipfile.ZipFile(archive).infolist()[0].file_size == 10
    dest = tmp_path / "stage"
    with pytest.raises((ValidationFailed, PayloadTooLarge)) as exc_info:
        extract_archive(archive, dest, max_total_bytes=100)
    assert refused(exc_info.value, dest) in ("bad_archive", "archive_too_large")


def test_unsupported_format_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "adapter.7z"
    archive.write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 100)
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsupported_archive"


def test_truncated_tar_gz_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 400
    archive = write_tar(tmp_path / "a.tgz", [("a.bin", payload), ("b.bin", payload)], "w:gz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "bad_archive"


def test_archive_with_no_files_is_refused(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tar", [tar_entry("empty-dir", tarfile.DIRTYPE)], "w")
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "empty_archive"


def test_existing_dest_is_refused_and_left_untouched(tmp_path: Path) -> None:
    archive = write_tar(tmp_path / "a.tgz", ADAPTER, "w:gz")
    dest = tmp_path / "stage"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        extract_archive(archive, dest, max_total_bytes=MB)
    assert (dest / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("tar_format", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_gz_with_huge_long_name_header_is_refused_before_it_is_read(
    tmp_path: Path, tar_format: int
) -> None:
    # tarfile reads long-name headers into memory whole; the stream cap must stop it first.
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz", format=tar_format) as tf:
        tf.addfile(*file_info("n" * 3_000_000, b"x"))
    assert archive.stat().st_size < 100_000
    dest = tmp_path / "stage"
    with pytest.raises(PayloadTooLarge) as exc_info:
        extract_archive(archive, dest, max_total_bytes=1000, max_files=10)
    assert refused(exc_info.value, dest) == "archive_too_large"


def test_tar_bz2_is_accepted(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.bz2"
    with tarfile.open(archive, "w:bz2") as tf:
        for name, data in FLAT:
            tf.addfile(*file_info(name, data))
    dest = tmp_path / "stage"
    assert extract_archive(archive, dest, max_total_bytes=MB) == dest
    assert (dest / "adapter_config.json").read_bytes() == b"{}"


def test_gzip_that_is_not_a_tar_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "weights.gz"
    archive.write_bytes(gzip.compress(b"not a tar archive at all" * 100))
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) == "unsupported_archive"


def test_corrupt_tar_xz_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.xz"
    with tarfile.open(archive, "w:xz") as tf:
        tf.addfile(*file_info("big.bin", bytes(range(256)) * 400))
    raw = bytearray(archive.read_bytes())
    raw[100:140] = b"\xff" * 40
    archive.write_bytes(bytes(raw))
    dest = tmp_path / "stage"
    with pytest.raises(ValidationFailed) as exc_info:
        extract_archive(archive, dest, max_total_bytes=MB)
    assert refused(exc_info.value, dest) in ("bad_archive", "unsupported_archive")

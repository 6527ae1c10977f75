"""Helpers for the audit export tests: a log written in the past at known times, building a
bundle through the services, running its verifier the way an auditor does, reading and tampering
with a bundle, and loading the verifier as a module."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

from django.conf import settings

from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User
from appliance.audit.canonical import canonical_bytes
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.choices import Outcome
from appliance.audit.exports import audit_export_build, audit_export_request, export_path
from appliance.audit.keys import signing_key_active
from appliance.audit.models import AuditEvent, AuditExport
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.choices import JobStatus
from appliance.core.models import Job

VERIFIER_SOURCE = Path(settings.BASE_DIR) / "compliance" / "verify_export.py"
BUNDLE_FILES = {
    "events.csv",
    "events.jsonl",
    "manifest.json",
    "manifest.sig",
    "pubkey.pem",
    "verify_export.py",
}

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
EVENTS = 20  # one an hour from START
MIDWAY = 9  # a checkpoint is signed after this many of them
ACTIONS = ("x.create", "x.update", "y.read", "x.delete")
RANGE_SINCE, RANGE_UNTIL = START + 5 * HOUR, START + 13 * HOUR  # events 5..12 of the 20

Files = dict[str, bytes]
Changes = dict[str, bytes | None]


@dataclass(frozen=True)
class Report:
    """What the verifier process said: its exit status and everything it printed."""

    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def export_bundle(
    directory: Path, *, actor: Actor | None = None, **filters: Any
) -> tuple[Path, AuditExport]:
    """Request and build an export through the services, and hand the auditor a copy of the
    stored bundle (so tampering with the copy leaves the appliance's file alone)."""
    job = audit_export_request(
        actor=actor or system_actor("export test"), filters=filters, enqueue=False
    )
    audit_export_build(job_id=str(job.pk))
    job = Job.objects.get(pk=job.pk)
    assert job.status == JobStatus.SUCCEEDED, job.error
    export = AuditExport.objects.get(pk=job.object_id)
    stored = export_path(export)
    assert stored is not None
    directory.mkdir(parents=True, exist_ok=True)
    copy = directory / stored.name
    shutil.copyfile(stored, copy)
    return copy, export


def members(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def manifest_of(bundle: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(members(bundle)["manifest.json"])
    return loaded


def rewrite_zip(source: Path, target: Path, changes: Mapping[str, bytes | None]) -> Path:
    """A copy of ``source`` with members replaced (bytes), removed (None) or added (new name)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        names = old.namelist()
        for name in names:
            if name in changes:
                replacement = changes[name]
                if replacement is not None:
                    new.writestr(name, replacement)
            else:
                new.writestr(name, old.read(name))
        for name, data in changes.items():
            if name not in names and data is not None:
                new.writestr(name, data)
    return target


def auditor_copy_of_verifier(bundle: Path, directory: Path) -> Path:
    """The auditor's working directory holding verify_export.py as taken out of a bundle."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "verify_export.py").write_bytes(members(bundle)["verify_export.py"])
    return directory


# The venv has the project installed in editable mode, so even ``python -I`` could import it; the
# bootstrap makes every ``import appliance`` fail before running the script as ``__main__``.
BOOTSTRAP = (
    "import runpy, sys; sys.modules['appliance'] = None; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)


def run_isolated(workdir: Path, script: str, *args: str) -> Report:
    """``python -I SCRIPT ARGS`` in ``workdir``, with appliance out of reach: isolated mode
    ignores PYTHONPATH, user site and the current directory, so the script sees only the standard
    library and the installed packages (``cryptography``), never appliance code."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and a script the test wrote
        [sys.executable, "-I", "-c", BOOTSTRAP, script, *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Report(done.returncode, done.stdout, done.stderr)


def run_verifier(workdir: Path, bundle: Path, *args: str) -> Report:
    """``python -I verify_export.py BUNDLE ARGS``, as an auditor runs it."""
    return run_isolated(workdir, "verify_export.py", str(bundle), *args)


def load_verifier() -> ModuleType:
    """compliance/verify_export.py as a module, to call its checks on hand-made inputs."""
    spec = importlib.util.spec_from_file_location("verify_export_under_test", VERIFIER_SOURCE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look modules up by name
    spec.loader.exec_module(module)
    return module


# A log at known times.


@contextmanager
def clock(moment: datetime) -> Iterator[None]:
    """Everything that asks django.utils.timezone for the time gets ``moment``."""
    with mock.patch("django.utils.timezone.now", return_value=moment):
        yield


@dataclass(frozen=True)
class Log:
    user: User  # the person some events are by
    fingerprint: str  # the signing key's, as the auditor got it out of band


def write_log(user: User) -> Log:
    """Twenty events written in January, an hour apart, by the system and by ``user``, with mixed
    actions and outcomes; the signing key is made before them and a checkpoint is signed after the
    ninth, so exports have a previous checkpoint to prove consistency with."""
    with clock(START - HOUR):
        key = signing_key_active()
    for i in range(EVENTS):
        with clock(START + i * HOUR):
            audit_record(
                actor=actor_for_user(user) if i % 3 == 0 else system_actor(),
                action=ACTIONS[i % len(ACTIONS)],
                object_type="thing",
                object_id=i,
                outcome=Outcome.FAILURE if i % 5 == 4 else Outcome.SUCCESS,
                details={"i": i, "note": f"event number {i}"},
            )
        if i + 1 == MIDWAY:
            with clock(START + i * HOUR + HOUR / 2):
                assert checkpoint_create(force=True) is not None
    times = list(AuditEvent.objects.order_by("seq").values_list("time", flat=True))
    assert times == sorted(times), "exports pick runs by time, so the log must be in time order"
    return Log(user=user, fingerprint=key.fingerprint)


def seqs_between(since: datetime, until: datetime) -> list[int]:
    return list(
        AuditEvent.objects.filter(time__gte=since, time__lt=until)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


# Bundles and what the verifier says about them.


@dataclass(frozen=True)
class Built:
    bundle: Path  # the auditor's copy
    export: AuditExport
    files: Files
    manifest: dict[str, Any]


def build(directory: Path, **filters: Any) -> Built:
    bundle, export = export_bundle(directory, **filters)
    return Built(bundle, export, members(bundle), manifest_of(bundle))


def verify(bundle: Path, fingerprint: str | None, *, verifier_from: Path | None = None) -> Report:
    """Run the verifier as an auditor would: copied out of a genuine bundle into a directory of
    its own (a tampered bundle's copy is not what the auditor runs), with the pinned fingerprint."""
    workdir = auditor_copy_of_verifier(verifier_from or bundle, bundle.parent / "auditor")
    args = ["--fingerprint", fingerprint] if fingerprint is not None else []
    return run_verifier(workdir, bundle, *args)


def assert_valid(report: Report) -> None:
    assert report.code == 0, report.text
    assert "VALID: the export is complete, unaltered and signed by the trusted key." in (
        report.stdout
    )
    assert "FAIL" not in report.stdout


def assert_invalid(report: Report, problem: str) -> None:
    """Exit status 1, one FAIL line naming ``problem``, the INVALID verdict, no traceback."""
    assert report.code == 1, report.text
    failures = [line for line in report.stdout.splitlines() if line.startswith("FAIL  ")]
    assert len(failures) == 1, report.text
    assert problem in failures[0], report.text
    assert report.stdout.endswith("INVALID: do not rely on this export.\n")
    assert "Traceback" not in report.text


# The files of a bundle.


def event_lines(files: Files) -> list[bytes]:
    data = files["events.jsonl"]
    return data.split(b"\n")[:-1] if data else []


def jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def seqs_of(files: Files) -> list[int]:
    return [json.loads(line)["seq"] for line in event_lines(files)]


def csv_rows(files: Files) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files["events.csv"].decode("utf-8"))))


def forged_next(lines: list[bytes]) -> bytes:
    """A plausible event that would come after the last of ``lines``, in canonical form."""
    last = json.loads(lines[-1])
    forged = {**last, "seq": last["seq"] + 1, "action": "x.delete", "details": {"forged": "yes"}}
    return canonical_bytes(forged)

"""Signed export bundles, checked the way an auditor checks them: the bundle's own
verify_export.py, run in a separate, isolated Python process against a fingerprint obtained out of
band; and ``manage.py audit export``. Tampering: test_export_tampering.py; the verifier's checks
one by one: test_export_verifier.py."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from appliance.accounts.models import User
from appliance.audit.bundles import CSV_COLUMNS
from appliance.audit.checkpoints import checkpoint_latest
from appliance.audit.choices import Outcome
from appliance.audit.keys import signing_key_rotate
from appliance.audit.models import AuditEvent, AuditExport
from appliance.audit.services import audit_record
from appliance.core.actors import system_actor
from tests.audit.bundles import (
    BUNDLE_FILES,
    HOUR,
    MIDWAY,
    RANGE_SINCE,
    RANGE_UNTIL,
    START,
    VERIFIER_SOURCE,
    Built,
    Log,
    assert_invalid,
    assert_valid,
    auditor_copy_of_verifier,
    build,
    csv_rows,
    manifest_of,
    members,
    run_isolated,
    seqs_between,
    seqs_of,
    verify,
)
from tests.conftest import actor

pytestmark = pytest.mark.django_db

# What verifies.


def test_bundle_holds_the_six_files_and_the_verifier_shipped_with_the_appliance(
    full_export: Built,
) -> None:
    assert set(full_export.files) == BUNDLE_FILES
    assert full_export.files["verify_export.py"] == VERIFIER_SOURCE.read_bytes()
    assert full_export.files["manifest.json"] == rfc8785.dumps(full_export.manifest)
    assert full_export.files["manifest.sig"].endswith(b"\n")


def test_isolated_auditor_process_cannot_import_appliance_code(full_export: Built) -> None:
    """The verifier runs below only prove a standalone verifier if appliance is out of reach."""
    workdir = auditor_copy_of_verifier(full_export.bundle, full_export.bundle.parent / "auditor")
    (workdir / "probe.py").write_text("import appliance\n")
    probe = run_isolated(workdir, "probe.py")
    assert probe.code != 0
    assert "ModuleNotFoundError: import of appliance halted" in probe.stderr


def test_full_export_verifies(full_export: Built, export_log: Log) -> None:
    last = AuditEvent.objects.filter(action="audit.export_request").get().seq
    assert (full_export.export.first_seq, full_export.export.last_seq) == (1, last)
    assert seqs_of(full_export.files) == list(range(1, last + 1))
    assert full_export.manifest["checkpoint"]["tree_size"] == last == full_export.export.tree_size
    latest = checkpoint_latest()
    assert latest is not None
    assert full_export.manifest["checkpoint"]["root"] == latest.root

    report = verify(full_export.bundle, export_log.fingerprint)

    assert_valid(report)
    for check in ("files", "key", "manifest", "file hashes", "sequence", "merkle", "checkpoints"):
        assert f"PASS  {check}" in report.stdout
    assert f"events 1..{last} ({last}), contiguous" in report.stdout
    assert f"extends the checkpoint at tree size {MIDWAY + 1}" in report.stdout


def test_fingerprint_is_accepted_in_any_case(full_export: Built, export_log: Log) -> None:
    assert_valid(verify(full_export.bundle, export_log.fingerprint.upper()))


def test_time_range_export_from_the_middle_of_the_log_verifies(
    ranged_export: Built, export_log: Log
) -> None:
    expected = seqs_between(RANGE_SINCE, RANGE_UNTIL)
    assert len(expected) == 8
    first, last = expected[0], expected[-1]
    assert (ranged_export.export.first_seq, ranged_export.export.last_seq) == (first, last)
    assert seqs_of(ranged_export.files) == expected
    manifest = ranged_export.manifest
    assert manifest["range"] == {"first_seq": first, "last_seq": last}
    assert manifest["filters"] == {
        "since": RANGE_SINCE.isoformat(),
        "until": RANGE_UNTIL.isoformat(),
    }
    assert manifest["prefix"]["size"] == first - 1
    assert len(manifest["prefix"]["hashes"]) == (first - 1).bit_count() >= 2
    assert manifest["checkpoint"]["tree_size"] > last
    assert len(manifest["range_to_checkpoint"]) >= 2
    assert manifest["previous_checkpoint"]["tree_size"] == MIDWAY + 1
    assert manifest["previous_to_checkpoint"]

    report = verify(ranged_export.bundle, export_log.fingerprint)

    assert_valid(report)
    assert f"events {first}..{last} (8), contiguous" in report.stdout


@pytest.mark.parametrize(
    ("since", "until"),
    [
        pytest.param(START + 5.5 * HOUR, START + 6 * HOUR, id="gap in the middle"),
        pytest.param(None, START - 2 * HOUR, id="before the first event"),
        pytest.param(datetime(2030, 1, 1, tzinfo=UTC), None, id="after the last event"),
    ],
)
def test_empty_time_range_still_verifies_against_the_checkpoint(
    export_log: Log, tmp_path: Path, since: datetime | None, until: datetime | None
) -> None:
    built = build(tmp_path / "empty", since=since, until=until)
    assert built.files["events.jsonl"] == b""
    assert csv_rows(built.files) == []
    first, last = built.export.first_seq, built.export.last_seq
    assert last == first - 1  # type: ignore[operator]
    assert built.manifest["prefix"]["size"] == first - 1  # type: ignore[operator]

    report = verify(built.bundle, export_log.fingerprint)

    assert_valid(report)
    assert f"events {first}..{last} (0), contiguous" in report.stdout


Predicate = Callable[[AuditEvent, Log], bool]
ROW_FILTERS: list[Any] = [
    pytest.param(
        lambda log: {"action": "x."}, lambda e, log: e.action.startswith("x."), id="action prefix"
    ),
    pytest.param(
        lambda log: {"action": "y.read"}, lambda e, log: e.action == "y.read", id="exact action"
    ),
    pytest.param(
        lambda log: {"actor_id": str(log.user.pk)},
        lambda e, log: e.actor_id == str(log.user.pk),
        id="actor id",
    ),
    pytest.param(
        lambda log: {"outcome": Outcome.FAILURE},
        lambda e, log: e.outcome == Outcome.FAILURE,
        id="outcome",
    ),
    pytest.param(
        lambda log: {"action": "x.", "outcome": Outcome.FAILURE},
        lambda e, log: e.action.startswith("x.") and e.outcome == Outcome.FAILURE,
        id="action prefix and outcome",
    ),
]


@pytest.mark.parametrize(("filters", "matches"), ROW_FILTERS)
def test_row_filters_choose_csv_rows_while_jsonl_keeps_the_whole_run(
    export_log: Log,
    tmp_path: Path,
    filters: Callable[[Log], dict[str, str]],
    matches: Predicate,
) -> None:
    built = build(tmp_path / "filtered", **filters(export_log))
    run = list(AuditEvent.objects.filter(seq__lte=built.export.last_seq).order_by("seq"))
    wanted = [e for e in run if matches(e, export_log)]
    assert 0 < len(wanted) < len(run)

    rows = csv_rows(built.files)

    assert [int(row["seq"]) for row in rows] == [e.seq for e in wanted]
    assert list(rows[0]) == list(CSV_COLUMNS)
    for row, event in zip(rows, wanted, strict=True):
        assert (row["action"], row["actor_id"], row["outcome"]) == (
            event.action,
            event.actor_id,
            event.outcome,
        )
        assert json.loads(row["details"]) == event.details
    assert seqs_of(built.files) == [e.seq for e in run]  # the whole run, for the proof
    assert built.manifest["selected"] == built.export.selected == len(wanted)
    assert built.manifest["filters"] == filters(export_log)
    assert_valid(verify(built.bundle, export_log.fingerprint))


def test_bundle_spanning_a_key_rotation_verifies_with_the_new_key_only(
    export_log: Log, admin: User, tmp_path: Path
) -> None:
    """The previous checkpoint was signed by the retired key; the manifest carries that key,
    vouched for by the new one, which is the only fingerprint the auditor needs."""
    signed_before = checkpoint_latest()
    assert signed_before is not None
    assert signed_before.key.fingerprint == export_log.fingerprint
    new_key = signing_key_rotate(actor=actor(admin))
    built = build(tmp_path / "rotated")
    assert built.manifest["key_fingerprint"] == new_key.fingerprint
    assert built.manifest["previous_checkpoint"]["key_fingerprint"] == export_log.fingerprint
    assert set(built.manifest["keys"]) == {export_log.fingerprint, new_key.fingerprint}

    assert_valid(verify(built.bundle, new_key.fingerprint))
    assert_invalid(verify(built.bundle, export_log.fingerprint), "not the one you trust")


# What the auditor gets wrong.


def test_wrong_fingerprint_fails(full_export: Built) -> None:
    wrong = "sha256:" + hashlib.sha256(b"some other key").hexdigest()
    assert_invalid(verify(full_export.bundle, wrong), "not the one you trust")


def test_missing_fingerprint_is_a_usage_error(full_export: Built) -> None:
    report = verify(full_export.bundle, None)
    assert report.code == 2, report.text
    assert "--fingerprint" in report.stderr
    assert "VALID" not in report.stdout


# The command line.


def test_cli_export_writes_a_bundle_that_verifies(export_log: Log, tmp_path: Path) -> None:
    out = tmp_path / "audit-2026-01.zip"
    stdout = io.StringIO()

    call_command(
        "audit",
        "export",
        "--out",
        str(out),
        "--since",
        RANGE_SINCE.isoformat(),
        "--until",
        RANGE_UNTIL.isoformat(),
        "--action",
        "x.",
        stdout=stdout,
    )

    export = AuditExport.objects.get()
    expected = seqs_between(RANGE_SINCE, RANGE_UNTIL)
    assert (export.first_seq, export.last_seq) == (expected[0], expected[-1])
    files = members(out)
    assert seqs_of(files) == expected
    assert all(row["action"].startswith("x.") for row in csv_rows(files))
    assert f"verify with: python verify_export.py {out} --fingerprint {export_log.fingerprint}" in (
        stdout.getvalue()
    )
    assert hashlib.sha256(out.read_bytes()).hexdigest() == export.sha256
    assert_valid(verify(out, export_log.fingerprint))


def test_cli_export_of_the_whole_log_verifies(export_log: Log, tmp_path: Path) -> None:
    out = tmp_path / "all.zip"
    call_command("audit", "export", "--out", str(out), stdout=io.StringIO())
    assert manifest_of(out)["range"]["first_seq"] == 1
    assert_valid(verify(out, export_log.fingerprint))


BAD_TIMES = ["2026-13-01", "2026-13-01T00:00:00Z", "2026-01-31T00:00:00", "yesterday"]


@pytest.mark.parametrize("value", BAD_TIMES)
def test_cli_export_with_a_bad_time_is_a_command_error_and_writes_nothing(
    export_log: Log, tmp_path: Path, value: str
) -> None:
    out = tmp_path / "never.zip"
    events_before = AuditEvent.objects.count()
    with pytest.raises(CommandError) as refused:
        call_command("audit", "export", "--out", str(out), "--since", value)
    assert value in str(refused.value)
    assert not out.exists()
    assert not AuditExport.objects.exists()
    assert AuditEvent.objects.count() == events_before


@pytest.mark.parametrize("value", BAD_TIMES)
def test_cli_export_with_a_bad_time_exits_with_a_message_not_a_traceback(
    export_log: Log, tmp_path: Path, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """As typed in a shell, ``manage.py audit export --since ...`` goes through run_from_argv,
    which reports argparse errors (usage, exit 2) and CommandErrors raised by ``handle`` (exit 1),
    but lets a CommandError raised while parsing the options escape as a traceback."""
    out = tmp_path / "never.zip"
    argv = ["manage.py", "audit", "export", "--out", str(out), "--since", value]
    with pytest.raises(SystemExit) as exited:
        ManagementUtility(argv).execute()
    assert exited.value.code not in (0, None)
    assert value in capsys.readouterr().err
    assert not out.exists()
    assert not AuditExport.objects.exists()


def test_cli_export_with_since_after_until_is_refused(export_log: Log, tmp_path: Path) -> None:
    out = tmp_path / "never.zip"
    with pytest.raises(CommandError, match=r"\[validation_error\]"):
        call_command(
            "audit",
            "export",
            "--out",
            str(out),
            "--since",
            RANGE_UNTIL.isoformat(),
            "--until",
            RANGE_SINCE.isoformat(),
        )
    assert not out.exists()
    assert not AuditExport.objects.exists()


def test_cli_export_to_a_missing_directory_is_a_command_error(
    export_log: Log, tmp_path: Path
) -> None:
    out = tmp_path / "no-such-directory" / "audit.zip"
    with pytest.raises(CommandError) as refused:
        call_command("audit", "export", "--out", str(out), stdout=io.StringIO())
    assert "no-such-directory" in str(refused.value)
    assert not out.parent.exists()


def test_csv_cells_a_spreadsheet_would_run_are_quoted_while_jsonl_stays_exact(
    tmp_path: Path,
) -> None:
    audit_record(actor=system_actor('=HYPERLINK("x")'), action="test.formula", object_id="-1")
    out = tmp_path / "bundle.zip"
    call_command("audit", "export", "--out", str(out), "--action", "test.formula")
    with zipfile.ZipFile(out) as archive:
        rows = list(csv.reader(io.StringIO(archive.read("events.csv").decode())))
        lines = archive.read("events.jsonl").decode()
    (row,) = rows[1:]
    assert row[CSV_COLUMNS.index("actor_label")] == '\'=HYPERLINK("x")'
    assert row[CSV_COLUMNS.index("object_id")] == "'-1"
    assert '"label":"=HYPERLINK(\\"x\\")"' in lines

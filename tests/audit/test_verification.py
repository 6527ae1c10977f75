"""`audit verify`: valid over an honest log; each kind of tampering named, with a non-zero exit."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.choices import Outcome
from appliance.audit.models import AuditEvent, AuditVerification
from appliance.audit.proofs import audit_consistency_proof, audit_inclusion_proof
from appliance.audit.services import audit_record
from appliance.audit.verification import audit_verify
from appliance.core.actors import system_actor
from appliance.core.errors import Conflict, PermissionDenied
from tests.audit.tampering import as_root
from tests.conftest import actor

pytestmark = pytest.mark.django_db


def write(n: int) -> None:
    for i in range(n):
        audit_record(actor=system_actor(), action="test.event", object_id=i, details={"i": i})


def honest_log() -> int:
    """A log of a few hundred events with two checkpoints; returns its size."""
    write(300)
    checkpoint_create()
    write(20)
    checkpoint = checkpoint_create()
    assert checkpoint is not None
    return checkpoint.tree_size


def verify_output(capsys: pytest.CaptureFixture[str]) -> tuple[bool, str]:
    try:
        call_command("audit", "verify")
    except CommandError as exc:
        return False, capsys.readouterr().out + str(exc)
    return True, capsys.readouterr().out


def test_honest_log_is_valid_with_size_and_root(capsys: pytest.CaptureFixture[str]) -> None:
    size = honest_log()
    ok, out = verify_output(capsys)
    assert ok, out
    result = AuditVerification.objects.get()
    assert (result.valid, result.tree_size, result.checkpoints_checked) == (True, size, 2)
    assert f"valid: {size} events, tree size {size}, root {result.root}" in out
    event = AuditEvent.objects.get(action="audit.verify")
    assert (event.outcome, event.details["problems"]) == (Outcome.SUCCESS, 0)


def test_a_changed_row_is_named_and_the_command_fails(capsys: pytest.CaptureFixture[str]) -> None:
    honest_log()
    as_root("UPDATE audit_auditevent SET actor_label = 'someone else' WHERE seq = 42")
    ok, out = verify_output(capsys)
    assert not ok
    assert "event 42 was changed" in out
    assert "does not match the log" in out  # both checkpoints cover seq 42
    assert "INVALID" in out
    assert AuditVerification.objects.get().valid is False
    assert AuditEvent.objects.get(action="audit.verify").outcome == Outcome.FAILURE


def test_a_row_rewritten_with_its_leaf_hash_is_caught_by_checkpoint_and_tile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    honest_log()
    forged = AuditEvent.objects.get(seq=7)
    forged.details = {"i": "forged"}
    from appliance.audit.canonical import canonical_bytes, leaf_hash
    from appliance.audit.services import event_document_of

    new_leaf = leaf_hash(canonical_bytes(event_document_of(forged)))
    as_root(
        "UPDATE audit_auditevent SET details = %s, leaf_hash = %s WHERE seq = 7",
        ['{"i": "forged"}', new_leaf],
    )
    ok, out = verify_output(capsys)
    assert not ok
    assert "event 7 was changed" not in out  # the row agrees with itself now...
    assert "events 1..256 differ from when they were checkpointed (tile 0)" in out
    assert "does not match the log" in out


def test_a_deleted_row_is_named_as_a_gap(capsys: pytest.CaptureFixture[str]) -> None:
    honest_log()
    as_root("DELETE FROM audit_auditevent WHERE seq = 100")
    ok, out = verify_output(capsys)
    assert not ok
    assert "events 100..100 are missing" in out
    assert "cannot be matched" in out


def test_removed_latest_events_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    size = honest_log()
    as_root("DELETE FROM audit_auditevent WHERE seq > %s", [size - 5])
    ok, out = verify_output(capsys)
    assert not ok
    assert f"events {size - 4}..{size} were removed" in out


def test_swapped_rows_are_both_named(capsys: pytest.CaptureFixture[str]) -> None:
    honest_log()
    # seq 10 held i=9 and seq 11 held i=10: swap their contents.
    as_root("UPDATE audit_auditevent SET details = %s WHERE seq = 10", ['{"i": 10}'])
    as_root("UPDATE audit_auditevent SET details = %s WHERE seq = 11", ['{"i": 9}'])
    ok, out = verify_output(capsys)
    assert not ok
    assert "event 10 was changed" in out and "event 11 was changed" in out


def test_a_forged_checkpoint_signature_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    honest_log()
    as_root(
        "UPDATE audit_auditcheckpoint SET root = %s "
        "WHERE id = (SELECT MIN(id) FROM audit_auditcheckpoint)",
        ["00" * 32],
    )
    ok, out = verify_output(capsys)
    assert not ok
    assert "has a bad signature" in out


def test_erasing_nothing_and_appending_more_keeps_the_log_valid() -> None:
    honest_log()
    write(5)  # events after the last checkpoint are checked too
    result = audit_verify(actor=system_actor())
    assert result.valid, result.problems


def test_operators_may_not_run_verification(operator: object) -> None:
    with pytest.raises(PermissionDenied):
        audit_verify(actor=actor(operator))  # type: ignore[arg-type]
    assert not AuditVerification.objects.exists()


def test_a_proof_over_missing_events_is_a_conflict_not_a_crash() -> None:
    honest_log()
    as_root("DELETE FROM audit_auditevent WHERE seq IN (5, 6)")
    with pytest.raises(Conflict, match="missing from the log") as refused:
        audit_inclusion_proof(actor=system_actor(), seq=5, tree_size=None)
    assert refused.value.code == "log_incomplete"
    with pytest.raises(Conflict, match="missing from the log"):
        audit_consistency_proof(actor=system_actor(), first=3, second=None)


def test_a_checkpoint_inside_a_gap_is_unmatched_not_reported_as_removed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    size = honest_log()  # checkpoints at 301 (300 events and the key's) and at ``size``
    as_root("DELETE FROM audit_auditevent WHERE seq BETWEEN 295 AND 305")
    ok, out = verify_output(capsys)
    assert not ok
    assert "events 295..305 are missing" in out
    assert out.count("cannot be matched") == 2
    assert "were removed" not in out
    assert size > 305

"""The audit API beyond the event list: the signing key, signed checkpoints, inclusion and
consistency proofs checked with the RFC 6962 verifiers, exports from request to a download that
verifies offline, and verification results; with the permission and not-found cases of each."""

from __future__ import annotations

import hashlib
import io
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command

from appliance.accounts.models import User
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.exports import audit_export_request
from appliance.audit.keys import fingerprint_of, signing_key_active
from appliance.audit.merkle import verify_consistency, verify_inclusion
from appliance.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from appliance.audit.services import audit_record
from appliance.audit.verification import audit_verify
from appliance.core.actors import ActorKind, system_actor
from appliance.core.choices import JobStatus
from appliance.core.models import Job
from tests.audit.bundles import auditor_copy_of_verifier, manifest_of, run_verifier
from tests.audit.tampering import as_root
from tests.conftest import ApiClient, actor

pytestmark = pytest.mark.django_db

ERROR_KEYS = {"code", "detail", "fields", "request_id"}


def write_events(count: int, action: str = "x.event") -> None:
    for i in range(count):
        audit_record(actor=system_actor(), action=action, details={"i": i})


def signed_checkpoint() -> AuditCheckpoint:
    checkpoint = checkpoint_create(force=True)
    assert checkpoint is not None
    return checkpoint


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.data
    assert set(response.data) == ERROR_KEYS
    assert response.data["code"] == code
    return dict(response.data)


def state() -> dict[str, Any]:
    """What a refused request must leave as it was (the denial itself is audited)."""
    return {
        "exports": AuditExport.objects.count(),
        "jobs": Job.objects.count(),
        "checkpoints": AuditCheckpoint.objects.count(),
        "audit": Counter(
            AuditEvent.objects.exclude(
                action__in=["permission.denied", "token.create"]
            ).values_list("action", flat=True)
        ),
    }


def download(client: ApiClient, export_id: Any) -> Any:
    """GET the bundle; a FileResponse streams, so its body is read here."""
    response = client.client.get(
        f"/api/v1/audit/exports/{export_id}/download", headers=client.headers
    )
    if response.streaming:
        # Reading to the end closes the response (the test client wraps the stream); closing it
        # again would fire request_finished and close the test's database connection.
        response.body = b"".join(response.streaming_content)
        response.data = None
    else:
        response.body = response.content
        response.data = response.json()
    return response


# The signing key.


def test_key_shows_the_active_fingerprint_and_its_public_key(api_as: Any, auditor: User) -> None:
    response = api_as(auditor).get("/audit/key")

    assert response.status_code == 200
    [key] = response.data
    active = signing_key_active()
    assert key["fingerprint"] == active.fingerprint
    assert key["retired_at"] is None
    public = serialization.load_pem_public_key(key["public_key_pem"].encode())
    assert isinstance(public, Ed25519PublicKey)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint_of(raw) == key["fingerprint"]


def test_rotated_key_is_listed_as_retired_after_the_active_one(
    api_as: Any, auditor: User, admin: User
) -> None:
    client = api_as(auditor)
    old = client.get("/audit/key").data[0]["fingerprint"]

    call_command("audit", "rotate-key", "--as", admin.username, stdout=io.StringIO())

    keys = client.get("/audit/key").data
    assert [k["fingerprint"] for k in keys] == [signing_key_active().fingerprint, old]
    assert keys[0]["fingerprint"] != old
    assert keys[0]["retired_at"] is None
    assert keys[1]["retired_at"] is not None
    latest = client.get("/audit/checkpoints/latest").data
    assert latest["key_fingerprint"] == keys[0]["fingerprint"]


# Checkpoints.


def test_latest_checkpoint_is_not_found_before_any_is_signed(api_as: Any, auditor: User) -> None:
    client = api_as(auditor)

    assert_error(client.get("/audit/checkpoints/latest"), 404, "not_found")
    listed = client.get("/audit/checkpoints")
    assert listed.status_code == 200
    assert listed.data["results"] == []


def test_checkpoints_are_listed_newest_first_with_their_signed_notes(
    api_as: Any, auditor: User
) -> None:
    write_events(3)
    first = signed_checkpoint()
    write_events(2)
    second = signed_checkpoint()
    client = api_as(auditor)

    listed = client.get("/audit/checkpoints").data["results"]
    latest = client.get("/audit/checkpoints/latest").data

    assert [c["id"] for c in listed] == [second.pk, first.pk]
    assert latest == listed[0]
    assert latest["tree_size"] == second.tree_size > first.tree_size
    assert latest["root"] == second.root
    assert latest["key_fingerprint"] == signing_key_active().fingerprint
    assert latest["note"].startswith(f"{second.origin}\n{second.tree_size}\n")
    assert "\n\n\u2014 " in latest["note"]


# Proofs.


def test_inclusion_proofs_verify_against_the_latest_checkpoint_root(
    api_as: Any, auditor: User
) -> None:
    write_events(12)
    checkpoint = signed_checkpoint()
    client = api_as(auditor)
    root = bytes.fromhex(client.get("/audit/checkpoints/latest").data["root"])
    size = checkpoint.tree_size

    for seq in sorted({1, 2, 7, 8, size - 1, size}):
        response = client.get(f"/audit/proofs/inclusion?seq={seq}")
        assert response.status_code == 200, response.data
        proof = response.data
        assert (proof["seq"], proof["leaf_index"], proof["tree_size"]) == (seq, seq - 1, size)
        assert proof["leaf_hash"] == AuditEvent.objects.get(seq=seq).leaf_hash
        assert proof["root"] == checkpoint.root
        hashes = [bytes.fromhex(h) for h in proof["proof"]]
        leaf = bytes.fromhex(proof["leaf_hash"])
        assert verify_inclusion(leaf, seq - 1, size, hashes, root)
        assert not verify_inclusion(leaf, seq % size, size, hashes, root)  # another position


def test_inclusion_proof_in_an_earlier_signed_tree_verifies_against_its_root(
    api_as: Any, auditor: User
) -> None:
    write_events(5)
    earlier = signed_checkpoint()
    write_events(9)
    signed_checkpoint()

    response = api_as(auditor).get(f"/audit/proofs/inclusion?seq=3&tree_size={earlier.tree_size}")

    assert response.status_code == 200, response.data
    proof = response.data
    assert proof["root"] == earlier.root
    assert verify_inclusion(
        bytes.fromhex(proof["leaf_hash"]),
        2,
        earlier.tree_size,
        [bytes.fromhex(h) for h in proof["proof"]],
        bytes.fromhex(earlier.root),
    )


def test_consistency_proof_between_two_checkpoints_verifies(api_as: Any, auditor: User) -> None:
    write_events(6)
    first = signed_checkpoint()
    write_events(11)
    second = signed_checkpoint()
    client = api_as(auditor)

    explicit = client.get(
        f"/audit/proofs/consistency?first={first.tree_size}&second={second.tree_size}"
    )
    default = client.get(f"/audit/proofs/consistency?first={first.tree_size}")

    assert explicit.status_code == 200, explicit.data
    assert default.data == explicit.data
    proof = explicit.data
    assert (proof["first"], proof["second"]) == (first.tree_size, second.tree_size)
    assert (proof["first_root"], proof["second_root"]) == (first.root, second.root)
    hashes = [bytes.fromhex(h) for h in proof["proof"]]
    assert hashes
    roots = bytes.fromhex(first.root), bytes.fromhex(second.root)
    assert verify_consistency(first.tree_size, second.tree_size, *roots, hashes)
    assert not verify_consistency(first.tree_size, second.tree_size, *reversed(roots), hashes)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("inclusion?seq=1&tree_size={beyond}", "tree_size"),
        ("inclusion?seq={beyond}", "seq"),
        ("inclusion?seq=0", "seq"),
        ("inclusion?seq=1&tree_size=-1", "tree_size"),
        ("consistency?first=1&second={beyond}", "second"),
        ("consistency?first={beyond}", "first"),
        ("consistency?first=-1", "first"),
    ],
)
def test_sizes_beyond_the_latest_checkpoint_are_refused_with_field_errors(
    api_as: Any, auditor: User, query: str, field: str
) -> None:
    write_events(4)
    checkpoint = signed_checkpoint()
    write_events(3)  # written but not yet signed: no proofs over them

    response = api_as(auditor).get("/audit/proofs/" + query.format(beyond=checkpoint.tree_size + 1))

    body = assert_error(response, 422, "validation_error")
    assert list(body["fields"]) == [field]


def test_proofs_before_any_checkpoint_are_refused(api_as: Any, auditor: User) -> None:
    write_events(3)
    response = api_as(auditor).get("/audit/proofs/inclusion?seq=1")
    assert assert_error(response, 422, "validation_error")["fields"] == {
        "seq": ["Must be between 1 and 0."]
    }


# Exports.


def test_export_from_request_to_a_download_that_verifies(
    api_as: Any,
    auditor: User,
    tmp_path: Path,
    django_capture_on_commit_callbacks: Any,
) -> None:
    write_events(5, action="x.create")
    write_events(4, action="y.read")
    client = api_as(auditor)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/audit/exports", {"action": "x."})

    assert response.status_code == 202, response.data
    export_id = response.data["id"]
    assert response.data["filters"] == {"action": "x."}
    assert response.data["status"] == JobStatus.QUEUED
    requested = AuditEvent.objects.get(action="audit.export_request")
    assert requested.object_id == export_id
    assert requested.actor_kind == ActorKind.TOKEN
    assert requested.actor_label.startswith(f"{auditor.username} via token")

    shown = client.get(f"/audit/exports/{export_id}").data
    assert shown["status"] == JobStatus.SUCCEEDED, shown
    assert shown["progress"] == 1.0
    assert shown["error"] == ""
    assert shown["first_seq"] == 1
    assert shown["selected"] == 5
    assert [e["id"] for e in client.get("/audit/exports").data["results"]] == [export_id]

    got = download(client, export_id)

    assert got.status_code == 200
    assert got["Content-Type"] == "application/zip"
    assert got["Content-Disposition"].startswith("attachment;")
    export = AuditExport.objects.get(pk=export_id)
    assert hashlib.sha256(got.body).hexdigest() == export.sha256 == shown["sha256"]
    bundle = tmp_path / "downloaded.zip"
    bundle.write_bytes(got.body)
    assert manifest_of(bundle)["export_id"] == export_id
    workdir = auditor_copy_of_verifier(bundle, tmp_path / "auditor")
    fingerprint = client.get("/audit/key").data[0]["fingerprint"]
    report = run_verifier(workdir, bundle, "--fingerprint", fingerprint)
    assert report.code == 0, report.text
    assert "VALID: the export is complete" in report.stdout

    downloaded = AuditEvent.objects.get(action="audit.export_download")
    assert downloaded.object_id == export_id
    assert downloaded.actor_kind == ActorKind.TOKEN
    assert downloaded.actor_label.startswith(f"{auditor.username} via token")
    assert downloaded.details == {"sha256": export.sha256}
    assert downloaded.seq > requested.seq


def test_download_of_an_unfinished_export_is_a_conflict(api_as: Any, auditor: User) -> None:
    client = api_as(auditor)
    export_id = client.post("/audit/exports", {}).data["id"]  # its job never ran: no on_commit

    response = download(client, export_id)

    assert_error(response, 409, "conflict")
    assert not AuditEvent.objects.filter(action="audit.export_download").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "x.", "format": "pdf"}, "format"),
        ({"since": "2026-06-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}, "until"),
        ({"since": "2026-06-02T00:00:00Z", "until": "2026-06-01T00:00:00Z"}, "until"),
        ({"since": "the other day"}, "since"),
    ],
)
def test_invalid_export_request_is_refused_and_creates_nothing(
    api_as: Any, auditor: User, body: dict[str, Any], field: str
) -> None:
    client = api_as(auditor)
    before = state()

    response = client.post("/audit/exports", body)

    error = assert_error(response, 422, "validation_error")
    assert any(field in name for name in error["fields"]), error
    assert state() == before


def test_export_range_mixing_a_naive_and_an_aware_time_is_a_validation_error(
    api_as: Any, auditor: User
) -> None:
    """A time without a zone next to one with a zone cannot be compared; the answer must be a
    422 naming the field, not an internal error."""
    client = api_as(auditor)
    before = state()

    response = client.post(
        "/audit/exports", {"since": "2026-06-01T00:00:00", "until": "2026-06-02T00:00:00Z"}
    )

    assert_error(response, 422, "validation_error")
    assert state() == before


@pytest.fixture
def finished_export(admin: User, django_capture_on_commit_callbacks: Any) -> AuditExport:
    write_events(3)
    with django_capture_on_commit_callbacks(execute=True):
        job = audit_export_request(actor=actor(admin), filters={})
    return AuditExport.objects.get(pk=job.object_id)


REFUSED_CALLS = [
    pytest.param("post", "/audit/exports", id="request an export"),
    pytest.param("get", "/audit/exports", id="list exports"),
    pytest.param("get", "/audit/exports/{export_id}", id="show an export"),
    pytest.param("get", "/audit/exports/{export_id}/download", id="download an export"),
    pytest.param("get", "/audit/proofs/inclusion?seq=1", id="inclusion proof"),
    pytest.param("get", "/audit/proofs/consistency?first=1", id="consistency proof"),
    pytest.param("get", "/audit/checkpoints/latest", id="latest checkpoint"),
    pytest.param("get", "/audit/key", id="signing key"),
    pytest.param("get", "/audit/verifications", id="verifications"),
]


@pytest.mark.parametrize("role", ["operator", "app_owner"])
@pytest.mark.parametrize(("method", "path"), REFUSED_CALLS)
def test_operators_and_app_owners_may_not_export_or_read_proofs(
    request: pytest.FixtureRequest,
    api_as: Any,
    finished_export: AuditExport,
    role: str,
    method: str,
    path: str,
) -> None:
    client = api_as(request.getfixturevalue(role))
    before = state()

    if path.endswith("/download"):
        response = download(client, finished_export.pk)
    else:
        response = getattr(client, method)(path.format(export_id=finished_export.pk))

    assert_error(response, 403, "permission_denied")
    assert state() == before
    assert AuditEvent.objects.order_by("-seq").first().action == "permission.denied"  # type: ignore[union-attr]


@pytest.mark.parametrize("suffix", ["", "/download"])
def test_unknown_export_is_not_found(api_as: Any, auditor: User, suffix: str) -> None:
    client = api_as(auditor)
    missing = uuid.uuid4()
    before = state()

    response = download(client, missing) if suffix else client.get(f"/audit/exports/{missing}")

    assert_error(response, 404, "not_found")
    assert state() == before


# Verifications.


def test_verifications_list_the_results_of_audit_verify(
    api_as: Any, auditor: User, admin: User
) -> None:
    client = api_as(auditor)
    assert client.get("/audit/verifications").data["results"] == []
    write_events(4)
    signed_checkpoint()
    first = audit_verify(actor=actor(admin))
    call_command("audit", "verify", stdout=io.StringIO())

    listed = client.get("/audit/verifications").data["results"]

    assert len(listed) == 2
    latest, earlier = listed
    assert earlier["id"] == first.pk
    assert earlier["root"] == first.root
    assert earlier["valid"] is first.valid is True
    assert latest["valid"] is True
    assert latest["problems"] == []
    assert latest["problem_count"] == 0
    assert latest["checkpoints_checked"] == 1
    assert latest["tree_size"] == latest["events_checked"]
    assert latest["tree_size"] == first.tree_size + 1  # the first run's own audit.verify event


def test_failed_verification_is_listed_with_the_changed_event(
    api_as: Any, auditor: User, admin: User
) -> None:
    write_events(4)
    signed_checkpoint()
    as_root("UPDATE audit_auditevent SET actor_label = 'someone else' WHERE seq = 2")
    result = audit_verify(actor=actor(admin))

    [listed] = api_as(auditor).get("/audit/verifications").data["results"]

    assert listed["id"] == result.pk
    assert listed["valid"] is False
    assert listed["problem_count"] == result.problem_count >= 1
    assert any(problem.startswith("event 2 was changed") for problem in listed["problems"])

"""Console audit pages: the event browser (filters, seq-cursor pages), one event with its leaf and
inclusion proof, the integrity facts (signing key, checkpoint, verification), exports from request
to download, and retention with legal holds; each with who may see and who may change it."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from io import BytesIO
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.test import Client

from appliance.access import services as access
from appliance.accounts.models import User
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.choices import Outcome
from appliance.audit.keys import signing_key_active
from appliance.audit.models import AuditEvent, AuditExport, LegalHold, RetentionPolicy
from appliance.audit.retention import legal_hold_place
from appliance.audit.services import audit_record
from appliance.audit.verification import audit_verify
from appliance.console.base import PAGE_SIZE
from appliance.core.actors import system_actor
from appliance.core.models import Job
from tests.conftest import actor

pytestmark = pytest.mark.django_db

PERSONAS = ["admin", "operator", "auditor", "app_owner"]
AUDIT_READERS = {"admin", "auditor"}


def write_events(count: int, action: str = "x.event", **fields: Any) -> list[AuditEvent]:
    return [
        audit_record(actor=system_actor(), action=action, details={"i": i}, **fields)
        for i in range(count)
    ]


def actions() -> Counter[str]:
    """The audit log's actions; console sign-in writes its own, so tests compare differences."""
    return Counter(AuditEvent.objects.values_list("action", flat=True))


def last_event(action: str) -> AuditEvent:
    event = AuditEvent.objects.filter(action=action).order_by("-seq").first()
    assert event is not None, f"no {action} event"
    return event


def assert_by(event: AuditEvent, user: User) -> None:
    assert (event.actor_kind, event.actor_id) == ("user", str(user.pk))


def body(response: Any) -> str:
    return response.content.decode()


def assert_sign_in(response: Any) -> None:
    assert response.status_code == 302
    assert response["Location"].startswith("/console/sign-in")


# --- who may open what ---------------------------------------------------------------------------

READ_PAGES = ["/console/audit", "/console/audit/retention", "/console/audit/exports"]


@pytest.mark.parametrize("url", READ_PAGES)
@pytest.mark.parametrize("persona", PERSONAS)
def test_audit_pages_open_for_admins_and_auditors_only(
    request: Any, console_as: Any, persona: str, url: str
) -> None:
    response = console_as(request.getfixturevalue(persona)).get(url)
    assert response.status_code == (200 if persona in AUDIT_READERS else 403)


@pytest.mark.parametrize(
    "url",
    [
        *READ_PAGES,
        "/console/audit/events/1",
        "/console/audit/exports/00000000-0000-0000-0000-000000000000/download",
    ],
)
def test_anonymous_people_are_sent_to_sign_in(db: None, url: str) -> None:
    assert_sign_in(Client().get(url))


@pytest.mark.parametrize(
    "url",
    [
        "/console/audit/exports",
        "/console/audit/holds",
        "/console/audit/holds/1/release",
        "/console/audit/retention/usage",
    ],
)
def test_anonymous_posts_change_nothing_and_go_to_sign_in(db: None, url: str) -> None:
    before = actions()
    assert_sign_in(Client().post(url, {"name": "x", "reason": "y", "days": "300"}))
    assert actions() == before
    assert not LegalHold.objects.exists()
    assert not AuditExport.objects.exists()
    assert not RetentionPolicy.objects.exists()


@pytest.mark.parametrize("url", ["/console/audit", "/console/audit/retention"])
def test_read_only_pages_refuse_posts(console_as: Any, auditor: User, url: str) -> None:
    client = console_as(auditor)
    before = actions()
    assert client.post(url, {"action": "x"}).status_code == 405
    assert actions() == before


@pytest.mark.parametrize("persona", PERSONAS)
def test_one_event_opens_for_admins_and_auditors_only(
    request: Any, console_as: Any, persona: str
) -> None:
    [event] = write_events(1)
    response = console_as(request.getfixturevalue(persona)).get(
        f"/console/audit/events/{event.seq}"
    )
    assert response.status_code == (200 if persona in AUDIT_READERS else 403)


# --- the browser ---------------------------------------------------------------------------------


def test_events_are_listed_newest_first_with_their_actor_and_outcome(
    console_as: Any, auditor: User
) -> None:
    write_events(2, action="model.import")
    audit_record(actor=system_actor("nightly job"), action="node.revoke", outcome=Outcome.FAILURE)

    page = body(console_as(auditor).get("/console/audit"))

    assert page.index("node.revoke") < page.index("model.import")
    assert "nightly job" in page
    assert '<span class="badge bad">failure</span>' in page


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("action=model.", {"model.import", "model.approve"}),
        ("action=model.import", {"model.import"}),
        ("outcome=denied", {"model.approve"}),
        ("object_type=node&object_id=7", {"node.revoke"}),
        ("actor_kind=system&actor_id=system&action=node.", {"node.revoke"}),
    ],
)
def test_filters_select_events_as_the_api_does(
    console_as: Any, auditor: User, query: str, expected: set[str]
) -> None:
    write_events(1, action="model.import")
    write_events(1, action="model.approve", outcome=Outcome.DENIED)
    write_events(1, action="node.revoke", object_type="node", object_id=7)

    page = body(console_as(auditor).get(f"/console/audit?{query}"))

    shown = {
        a for a in ("model.import", "model.approve", "node.revoke") if f"<code>{a}</code>" in page
    }
    assert shown == expected


def test_a_time_range_in_the_persons_zone_selects_events(console_as: Any, auditor: User) -> None:
    [event] = write_events(1, action="x.now")
    auditor.time_zone = "Europe/Berlin"
    auditor.save()
    local = event.time.astimezone(ZoneInfo("Europe/Berlin"))
    client = console_as(auditor)

    before = local.replace(tzinfo=None, second=0, microsecond=0).isoformat(timespec="minutes")
    assert "<code>x.now</code>" in body(client.get(f"/console/audit?since={before}"))
    assert "<code>x.now</code>" not in body(client.get(f"/console/audit?until={before}"))


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("since=yesterday", "since", "Give a date and time"),
        ("until=2026-13-45T10:00", "until", "Give a date and time"),
        ("outcome=maybe", "outcome", "Choose an outcome"),
        ("actor_kind=robot", "actor_kind", "Choose a kind"),
        ("object_type=" + "x" * 33, "object_type", "At most 32 characters"),
    ],
)
def test_bad_filters_are_field_errors_not_crashes(
    console_as: Any, auditor: User, query: str, field: str, message: str
) -> None:
    write_events(1)
    response = console_as(auditor).get(f"/console/audit?{query}")

    assert response.status_code == 422
    page = body(response)
    assert f'id="err_{field}"' in page
    assert message in page


def test_pages_follow_seq_cursors_without_repeating_or_skipping(
    console_as: Any, auditor: User
) -> None:
    write_events(PAGE_SIZE * 2 + 5, action="x.paged")
    client = console_as(auditor)
    paged = list(
        AuditEvent.objects.filter(action="x.paged").order_by("-seq").values_list("seq", flat=True)
    )

    def seqs(response: Any) -> list[int]:
        return [e.seq for e in response.context["page"].events if e.action == "x.paged"]

    first = client.get("/console/audit?action=x.paged")
    page = first.context["page"]
    assert seqs(first) == paged[:PAGE_SIZE]
    assert page.newer is None
    assert f"before={page.older}" in body(first)

    second = client.get(f"/console/audit?action=x.paged&before={page.older}")
    third = client.get(f"/console/audit?action=x.paged&before={second.context['page'].older}")
    assert seqs(second) == paged[PAGE_SIZE : 2 * PAGE_SIZE]
    assert seqs(third) == paged[2 * PAGE_SIZE :]
    assert third.context["page"].older is None

    back = client.get(f"/console/audit?action=x.paged&after={third.context['page'].newer}")
    assert seqs(back) == seqs(second)
    assert "after=" in body(second) and "action=x.paged" in body(second)


def test_a_bad_cursor_shows_the_newest_page(console_as: Any, auditor: User) -> None:
    write_events(3, action="x.cursor")
    response = console_as(auditor).get("/console/audit?action=x.cursor&before=abc")
    assert response.status_code == 200
    assert len(response.context["page"].events) == 3


# --- integrity -----------------------------------------------------------------------------------


def test_the_active_key_checkpoint_and_verification_are_shown(
    console_as: Any, auditor: User, admin: User
) -> None:
    write_events(4)
    checkpoint = checkpoint_create(force=True)
    assert checkpoint is not None
    verification = audit_verify(actor=actor(admin), workers=1)

    page = body(console_as(auditor).get("/console/audit"))

    fingerprint = signing_key_active().fingerprint
    assert f'id="active-key-fingerprint">{fingerprint}</p>' in page
    assert f'id="checkpoint-size">{checkpoint.tree_size} events' in page
    assert checkpoint.root in page
    assert '<span class="badge ok">Valid</span>' in page
    assert f"<dd>{verification.events_checked}</dd>" in page


def test_before_any_key_or_checkpoint_the_page_says_so(console_as: Any, auditor: User) -> None:
    page = body(console_as(auditor).get("/console/audit"))
    assert "No signing key yet" in page
    assert "Never run" in page


# --- one event -----------------------------------------------------------------------------------


def test_an_event_shows_every_field_its_details_and_its_inclusion_proof(
    console_as: Any, auditor: User
) -> None:
    [event] = write_events(1, action="model.approve", object_type="model", object_id=3)
    checkpoint_create(force=True)
    client = console_as(auditor)

    response = client.get(f"/console/audit/events/{event.seq}")

    page = body(response)
    assert f'id="leaf-hash">{event.leaf_hash}</dd>' in page
    assert f"<dd>{event.seq - 1}</dd>" in page
    assert json.loads(response.context["details"]) == event.details
    assert "\n  &quot;i&quot;: 0\n" in page  # pretty-printed
    proof_url = response.context["proof_url"]
    assert proof_url == f"/api/v1/audit/proofs/inclusion?seq={event.seq}"
    proof = client.get(proof_url)
    assert proof.status_code == 200
    assert proof.json()["leaf_hash"] == event.leaf_hash


def test_an_event_not_yet_signed_has_no_proof_link(console_as: Any, auditor: User) -> None:
    [event] = write_events(1)
    response = console_as(auditor).get(f"/console/audit/events/{event.seq}")
    assert response.context["proof_url"] == ""
    assert "Not yet signed" in body(response)


def test_a_missing_event_is_404(console_as: Any, auditor: User) -> None:
    response = console_as(auditor).get("/console/audit/events/999999")
    assert response.status_code == 404


# --- exports -------------------------------------------------------------------------------------


def test_an_auditor_requests_an_export_and_it_is_audited(console_as: Any, auditor: User) -> None:
    write_events(3)
    client = console_as(auditor)
    before = actions()

    response = client.post(
        "/console/audit/exports",
        {"action": "x.", "outcome": "success", "since": "2026-01-01T00:00"},
    )

    assert response.status_code == 303
    export = AuditExport.objects.get()
    assert export.filters == {
        "action": "x.",
        "outcome": "success",
        "since": "2026-01-01T00:00:00+00:00",
    }
    assert Job.objects.filter(object_type="audit_export", object_id=str(export.pk)).exists()
    assert actions() - before == Counter({"audit.export_request": 1})
    assert_by(last_event("audit.export_request"), auditor)


def test_the_browser_links_its_filters_to_the_export_form(console_as: Any, auditor: User) -> None:
    client = console_as(auditor)
    page = body(client.get("/console/audit?action=model.&outcome=denied"))
    assert 'href="/console/audit/exports?action=model.&amp;outcome=denied"' in page
    form = body(client.get("/console/audit/exports?action=model.&outcome=denied"))
    assert 'name="action" type="text" value="model."' in form


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"since": "2026-02-01T00:00", "until": "2026-01-01T00:00"}, "until", "Must be later"),
        ({"since": "soon"}, "since", "Give a date and time"),
        ({"outcome": "perhaps"}, "outcome", "Choose an outcome"),
        ({"action": "a" * 65}, "action", "At most 64 characters"),
    ],
)
def test_a_bad_export_request_is_refused_and_nothing_is_queued(
    console_as: Any, auditor: User, data: dict[str, str], field: str, message: str
) -> None:
    client = console_as(auditor)
    before = actions()
    response = client.post("/console/audit/exports", data)

    assert response.status_code == 422
    page = body(response)
    assert f'id="err_{field}"' in page
    assert message in page
    assert not AuditExport.objects.exists()
    assert not Job.objects.exists()
    assert actions() == before


@pytest.mark.parametrize("persona", ["operator", "app_owner"])
def test_others_cannot_request_exports(request: Any, console_as: Any, persona: str) -> None:
    response = console_as(request.getfixturevalue(persona)).post("/console/audit/exports", {})
    assert response.status_code == 403
    assert not AuditExport.objects.exists()


def test_an_unfinished_export_polls_in_the_background_until_it_is_done(
    console_as: Any, auditor: User, django_capture_on_commit_callbacks: Any
) -> None:
    write_events(5)
    client = console_as(auditor)
    client.post("/console/audit/exports", {})
    export = AuditExport.objects.get()
    row_url = f"/console/audit/exports/{export.pk}/row"

    listed = body(client.get("/console/audit/exports"))
    assert f'hx-get="{row_url}" hx-trigger="every 2s" hx-swap="outerHTML"' in listed
    assert """hx-headers='{"X-Console-Background": "1"}'""" in listed
    assert "queued" in listed

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/console/audit/exports", {})  # the second one is built at once
    built = AuditExport.objects.exclude(pk=export.pk).get()
    row = body(client.get(f"/console/audit/exports/{built.pk}/row"))
    assert row.startswith("<tr") or row.lstrip().startswith("<tr")
    assert "hx-trigger" not in row
    assert '<span class="badge ok">succeeded</span>' in row
    assert f'href="/console/audit/exports/{built.pk}/download"' in row
    assert built.sha256 in row


def read_stream(response: Any) -> bytes:
    # Reading to the end closes the streamed response (see tests/audit/test_audit_api.py).
    return b"".join(response.streaming_content)


def test_a_finished_export_downloads_as_an_attachment_and_the_download_is_audited(
    console_as: Any, auditor: User, django_capture_on_commit_callbacks: Any
) -> None:
    write_events(4)
    client = console_as(auditor)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/console/audit/exports", {})
    export = AuditExport.objects.get()
    before = actions()

    response = client.get(f"/console/audit/exports/{export.pk}/download")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert response["Content-Disposition"].startswith("attachment;")
    assert export.file_name in response["Content-Disposition"]
    with zipfile.ZipFile(BytesIO(read_stream(response))) as bundle:
        assert bundle.namelist()
    assert actions() - before == Counter({"audit.export_download": 1})
    assert_by(last_event("audit.export_download"), auditor)


def test_an_unfinished_export_cannot_be_downloaded(console_as: Any, auditor: User) -> None:
    client = console_as(auditor)
    client.post("/console/audit/exports", {})
    export = AuditExport.objects.get()
    before = actions()

    response = client.get(f"/console/audit/exports/{export.pk}/download")

    assert response.status_code == 409
    assert "has no bundle" in body(response)
    assert actions() == before


@pytest.mark.parametrize("persona", ["operator", "app_owner"])
def test_others_cannot_download_or_poll_exports(
    request: Any, console_as: Any, auditor: User, persona: str
) -> None:
    console_as(auditor).post("/console/audit/exports", {})
    export = AuditExport.objects.get()
    client = console_as(request.getfixturevalue(persona))
    before = actions()
    assert client.get(f"/console/audit/exports/{export.pk}/download").status_code == 403
    assert client.get(f"/console/audit/exports/{export.pk}/row").status_code == 403
    assert actions() == before


def test_a_missing_export_is_404(console_as: Any, auditor: User) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    client = console_as(auditor)
    assert client.get(f"/console/audit/exports/{missing}/download").status_code == 404
    assert client.get(f"/console/audit/exports/{missing}/row").status_code == 404


# --- retention and legal holds -------------------------------------------------------------------


def hold(admin: User, name: str = "Smith v. Hospital", **scope: Any) -> LegalHold:
    return legal_hold_place(actor=actor(admin), name=name, reason="litigation", **scope)


def test_retention_and_holds_are_shown_and_only_admins_see_the_forms(
    console_as: Any, admin: User, auditor: User
) -> None:
    app = access.application_create(actor=actor(admin), name="discharge-letters", owner=admin)
    hold(admin, application=app)

    read = body(console_as(auditor).get("/console/audit/retention"))
    manage = body(console_as(admin).get("/console/audit/retention"))

    for page in (read, manage):
        assert "Smith v. Hospital" in page
        assert "discharge-letters" in page
        assert '<span class="badge warn">active</span>' in page
        assert "never deleted" in page  # audit events
    assert "Place the legal hold" not in read and "Release…" not in read
    assert "Place the legal hold" in manage and "Release…" in manage


def test_an_admin_places_a_hold_and_it_is_audited(console_as: Any, admin: User) -> None:
    app = access.application_create(actor=actor(admin), name="discharge-letters", owner=admin)
    client = console_as(admin)
    before = actions()

    response = client.post(
        "/console/audit/holds",
        {
            "name": "Regulator request",
            "reason": "Inquiry 42",
            "application_id": str(app.pk),
            "starts_at": "2026-01-01T00:00",
            "ends_at": "2026-02-01T00:00",
        },
    )

    assert response.status_code == 303
    placed = LegalHold.objects.get()
    assert (placed.name, placed.reason, placed.application_id) == (
        "Regulator request",
        "Inquiry 42",
        app.pk,
    )
    assert (
        placed.starts_at is not None and placed.starts_at.isoformat() == "2026-01-01T00:00:00+00:00"
    )
    assert actions() - before == Counter({"legal_hold.place": 1})
    assert_by(last_event("legal_hold.place"), admin)


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"name": "", "reason": "why"}, "name", "Give the hold a name"),
        ({"name": "x", "reason": ""}, "reason", "Say why"),
        (
            {
                "name": "x",
                "reason": "y",
                "starts_at": "2026-02-01T00:00",
                "ends_at": "2026-01-01T00:00",
            },
            "ends_at",
            "Must be later",
        ),
        ({"name": "x", "reason": "y", "application_id": "abc"}, "application_id", "Choose one"),
        ({"name": "x", "reason": "y", "application_id": "999999"}, "application_id", "No such"),
        ({"name": "x", "reason": "y", "starts_at": "whenever"}, "starts_at", "Give a date"),
    ],
)
def test_a_bad_hold_is_refused_with_the_field_error_and_nothing_placed(
    console_as: Any, admin: User, data: dict[str, str], field: str, message: str
) -> None:
    client = console_as(admin)
    before = actions()
    response = client.post("/console/audit/holds", data)

    assert response.status_code == 422
    page = body(response)
    assert message in page
    assert f'id="err_{field}"' in page or field == "reason"
    assert not LegalHold.objects.exists()
    assert actions() == before


@pytest.mark.parametrize("persona", ["auditor", "operator", "app_owner"])
def test_only_admins_place_or_release_holds(
    request: Any, console_as: Any, admin: User, persona: str
) -> None:
    existing = hold(admin)
    client = console_as(request.getfixturevalue(persona))
    before = actions()

    assert client.post("/console/audit/holds", {"name": "x", "reason": "y"}).status_code == 403
    assert client.get(f"/console/audit/holds/{existing.pk}/release").status_code == 403
    assert client.post(f"/console/audit/holds/{existing.pk}/release").status_code == 403

    assert LegalHold.objects.count() == 1
    existing.refresh_from_db()
    assert existing.released_at is None
    assert actions() == before


def test_releasing_a_hold_asks_first_and_then_releases_it(console_as: Any, admin: User) -> None:
    existing = hold(admin)
    client = console_as(admin)
    url = f"/console/audit/holds/{existing.pk}/release"

    confirm = client.get(url)
    assert confirm.status_code == 200
    assert "Release legal hold “Smith v. Hospital”" in body(confirm)
    assert "every application" in body(confirm)
    existing.refresh_from_db()
    assert existing.released_at is None
    before = actions()

    response = client.post(url)

    assert response.status_code == 303
    existing.refresh_from_db()
    assert existing.released_at is not None
    assert existing.released_by == admin.username
    assert actions() - before == Counter({"legal_hold.release": 1})
    assert_by(last_event("legal_hold.release"), admin)


def test_releasing_a_released_hold_is_a_conflict(console_as: Any, admin: User) -> None:
    existing = hold(admin)
    client = console_as(admin)
    client.post(f"/console/audit/holds/{existing.pk}/release")
    response = client.post(f"/console/audit/holds/{existing.pk}/release")
    assert response.status_code == 409
    assert "already released" in body(response)


def test_a_missing_hold_is_404(console_as: Any, admin: User) -> None:
    assert console_as(admin).get("/console/audit/holds/999/release").status_code == 404


def test_an_admin_sets_a_retention_and_it_is_audited(console_as: Any, admin: User) -> None:
    client = console_as(admin)
    before = actions()
    response = client.post("/console/audit/retention/usage", {"days": "200"})

    assert response.status_code == 303
    assert RetentionPolicy.objects.get(category="usage").days == 200
    assert actions() - before == Counter({"retention.set": 1})
    assert_by(last_event("retention.set"), admin)


@pytest.mark.parametrize(
    ("category", "days", "status", "message"),
    [
        ("usage", "30", 422, "must be kept at least 183 days"),
        ("usage", "many", 422, "Give a whole number of days"),
        ("usage", "-5", 422, "Give a whole number of days"),
        ("nonsense", "30", 404, "No data category"),
    ],
)
def test_a_bad_retention_is_refused_and_nothing_changes(
    console_as: Any, admin: User, category: str, days: str, status: int, message: str
) -> None:
    client = console_as(admin)
    before = actions()
    response = client.post(f"/console/audit/retention/{category}", {"days": days})

    assert response.status_code == status
    assert message in body(response)
    assert not RetentionPolicy.objects.exists()
    assert actions() == before


@pytest.mark.parametrize("persona", ["auditor", "operator", "app_owner"])
def test_only_admins_set_retention(request: Any, console_as: Any, persona: str) -> None:
    response = console_as(request.getfixturevalue(persona)).post(
        "/console/audit/retention/usage", {"days": "300"}
    )
    assert response.status_code == 403
    assert not RetentionPolicy.objects.exists()

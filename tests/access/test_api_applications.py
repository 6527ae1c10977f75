"""Applications through the API: who sees which, who may create and change what, and that another
owner's application looks exactly like a missing one on every route."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import DatabaseError

from appliance.access import services
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry.models import Adapter, BaseModel
from tests.access.conftest import access_state, assert_refused
from tests.conftest import actor

pytestmark = pytest.mark.django_db

MISSING = 999_999


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.data
    assert response.data["count"] == len(response.data["items"])
    return [item["name"] for item in response.data["items"]]


# --- list and read -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator", "auditor"])
def test_admins_operators_and_auditors_see_every_application_in_name_order(
    request: pytest.FixtureRequest,
    api_as: Any,
    owens_app: Application,
    oscars_app: Application,
    role: str,
) -> None:
    user = request.getfixturevalue(role)
    assert names(api_as(user).get("/applications")) == ["discharge-letters", "fraud-screen"]
    assert api_as(user).get(f"/applications/{oscars_app.pk}").status_code == 200


def test_app_owner_sees_only_their_own_applications(
    api_as: Any, app_owner: User, oscar: User, owens_app: Application, oscars_app: Application
) -> None:
    assert names(api_as(app_owner).get("/applications")) == ["discharge-letters"]
    assert names(api_as(oscar).get("/applications")) == ["fraud-screen"]


def test_application_is_shown_with_its_owner_limits_and_policy(
    api_as: Any, app_owner: User, owens_app: Application
) -> None:
    shown = api_as(app_owner).get(f"/applications/{owens_app.pk}").data

    assert (shown["id"], shown["name"], shown["department"]) == (
        owens_app.pk,
        "discharge-letters",
        "cardiology",
    )
    assert (shown["owner"], shown["owner_id"]) == ("owen", app_owner.pk)
    assert (shown["data_classification"], shown["data_policy"], shown["status"]) == (
        "internal",
        "no_content",
        "active",
    )
    assert shown["requests_per_minute"] is None and shown["monthly_token_budget"] is None


def test_anonymous_callers_see_no_applications(api_as: Any, owens_app: Application) -> None:
    for path in ("/applications", f"/applications/{owens_app.pk}"):
        response = api_as(None).get(path)
        assert (response.status_code, response.data["code"]) == (401, "not_authenticated")


# --- another owner's application looks missing everywhere --------------------------------------


@pytest.fixture
def owens_key_and_grant(
    admin: User, app_owner: User, owens_app: Application, approved_model: BaseModel
) -> tuple[ApiKey, Grant]:
    key, _ = services.api_key_create(actor=actor(app_owner), application=owens_app, name="prod")
    grant = services.grant_create(actor=actor(admin), application=owens_app, model=approved_model)
    return key, grant


def every_route(
    application_id: int, key_id: int, grant_id: int, model_id: int
) -> list[tuple[str, str, Any]]:
    base = f"/applications/{application_id}"
    return [
        ("get", base, None),
        ("patch", base, {"description": "taken over"}),
        ("get", f"{base}/keys", None),
        ("post", f"{base}/keys", {"name": "stolen"}),
        ("post", f"{base}/keys/{key_id}/revoke", {}),
        ("get", f"{base}/grants", None),
        ("post", f"{base}/grants", {"model_id": model_id}),
        ("delete", f"{base}/grants/{grant_id}", None),
    ]


def test_another_owners_application_answers_every_route_like_a_missing_one(
    api_as: Any,
    oscar: User,
    owens_app: Application,
    owens_key_and_grant: tuple[ApiKey, Grant],
    approved_model: BaseModel,
) -> None:
    key, grant = owens_key_and_grant
    client = api_as(oscar)
    before = access_state()
    hidden = every_route(owens_app.pk, key.pk, grant.pk, approved_model.pk)
    missing = every_route(MISSING, key.pk, grant.pk, approved_model.pk)

    for (method, path, body), (_, missing_path, _) in zip(hidden, missing, strict=True):
        answer = client.call(method, path, body)
        expected = client.call(method, missing_path, body)
        assert answer.status_code == expected.status_code == 404, (method, path, answer.data)
        assert (answer.data["code"], answer.data["detail"]) == (
            expected.data["code"],
            expected.data["detail"],
        ), (method, path)

    assert access_state() == before
    assert not AuditEvent.objects.filter(action="permission.denied").exists()


def test_change_whose_audit_event_cannot_be_written_is_not_made(
    api_as: Any,
    admin: User,
    owens_app: Application,
    owens_key_and_grant: tuple[ApiKey, Grant],
    approved_adapters: list[Adapter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key, grant = owens_key_and_grant
    client = api_as(admin)
    base = f"/applications/{owens_app.pk}"
    writes: list[tuple[str, str, Any]] = [
        ("post", "/applications", {"name": "new-app", "owner_id": admin.pk}),
        ("patch", base, {"department": "oncology", "requests_per_minute": 5}),
        ("post", f"{base}/keys", {"name": "new-key"}),
        ("post", f"{base}/keys/{key.pk}/revoke", {}),
        (
            "post",
            f"{base}/grants",
            {"model_id": grant.model_id, "adapter_id": approved_adapters[0].pk},
        ),
        ("delete", f"{base}/grants/{grant.pk}", None),
    ]
    before = access_state()

    def broken_save(self: AuditEvent, *args: Any, **kwargs: Any) -> None:
        raise DatabaseError("disk full")

    monkeypatch.setattr(AuditEvent, "save", broken_save)
    answers = [(path, client.call(method, path, body)) for method, path, body in writes]
    monkeypatch.undo()

    for path, response in answers:
        assert (response.status_code, response.data["code"]) == (503, "audit_unavailable"), path
    assert access_state() == before


# --- create ------------------------------------------------------------------------------------


def test_app_owner_creates_an_application_owned_by_themselves(api_as: Any, app_owner: User) -> None:
    response = api_as(app_owner).post(
        "/applications",
        {"name": "discharge-letters", "description": "Drafts letters", "department": "cardiology"},
    )

    assert response.status_code == 201, response.data
    application = Application.objects.get(pk=response.data["id"])
    assert (application.name, application.owner, application.created_by) == (
        "discharge-letters",
        app_owner,
        app_owner,
    )
    assert (response.data["owner"], response.data["data_policy"]) == ("owen", "no_content")
    event = AuditEvent.objects.get(action="application.create")
    assert event.actor_label.startswith("owen via token")
    assert event.object_id == str(application.pk)


def test_app_owner_cannot_create_an_application_for_another_owner(
    api_as: Any, app_owner: User, oscar: User
) -> None:
    client = api_as(app_owner)
    before = access_state()
    response = client.post("/applications", {"name": "for-oscar", "owner_id": oscar.pk})
    assert_refused(response, 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_app_owner_cannot_give_a_new_application_limits_or_a_data_policy(
    api_as: Any, app_owner: User
) -> None:
    client = api_as(app_owner)
    before = access_state()
    for extra in ({"requests_per_minute": 100_000}, {"data_policy": "keep_encrypted"}):
        response = client.post("/applications", {"name": "greedy", **extra})
        assert_refused(response, 403, "permission_denied", before)


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_creates_an_application_for_an_owner_with_limits(
    request: pytest.FixtureRequest, api_as: Any, app_owner: User, role: str
) -> None:
    manager = request.getfixturevalue(role)
    response = api_as(manager).post(
        "/applications",
        {
            "name": "fraud-screen",
            "owner_id": app_owner.pk,
            "data_classification": "restricted",
            "data_policy": "keep_encrypted",
            "requests_per_minute": 60,
            "max_tokens_per_request": 1024,
        },
    )

    assert response.status_code == 201, response.data
    application = Application.objects.get(name="fraud-screen")
    assert (application.owner, application.created_by) == (app_owner, manager)
    assert (application.requests_per_minute, application.max_tokens_per_request) == (60, 1024)
    assert (application.data_classification, application.data_policy) == (
        "restricted",
        "keep_encrypted",
    )


def test_auditor_cannot_create_an_application(api_as: Any, auditor: User) -> None:
    client = api_as(auditor)
    before = access_state()
    assert_refused(client.post("/applications", {"name": "x"}), 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_owner_that_is_not_an_app_owner_or_admin_is_refused(
    api_as: Any, admin: User, auditor: User
) -> None:
    client = api_as(admin)
    before = access_state()
    response = client.post("/applications", {"name": "x", "owner_id": auditor.pk})
    assert_refused(response, 422, "validation_error", before)
    assert "owner_id" in response.data["fields"]


def test_unknown_owner_is_refused(api_as: Any, admin: User) -> None:
    client = api_as(admin)
    before = access_state()
    assert_refused(
        client.post("/applications", {"name": "x", "owner_id": MISSING}), 404, "not_found", before
    )


def test_duplicate_application_name_is_a_conflict(
    api_as: Any, oscar: User, owens_app: Application
) -> None:
    client = api_as(oscar)
    before = access_state()
    response = client.post("/applications", {"name": owens_app.name})
    assert_refused(response, 409, "duplicate_name", before)


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "status": "disabled"},  # mass assignment: status is not settable here
        {"name": "x", "created_by_id": 1},
        {"name": "x", "data_classification": "top-secret"},
        {"name": "x", "requests_per_minute": 0},
        {"description": "no name"},
    ],
    ids=["blank-name", "status", "created-by", "classification", "zero-limit", "no-name"],
)
def test_invalid_or_unknown_create_fields_are_refused(
    api_as: Any, admin: User, body: dict[str, Any]
) -> None:
    client = api_as(admin)
    before = access_state()
    assert_refused(client.post("/applications", body), 422, "validation_error", before)


# --- update ------------------------------------------------------------------------------------


def test_owner_changes_description_and_department(
    api_as: Any, app_owner: User, owens_app: Application
) -> None:
    response = api_as(app_owner).patch(
        f"/applications/{owens_app.pk}", {"description": "v2", "department": "oncology"}
    )

    assert response.status_code == 200, response.data
    assert (response.data["description"], response.data["department"]) == ("v2", "oncology")
    owens_app.refresh_from_db()
    assert (owens_app.description, owens_app.department) == ("v2", "oncology")
    event = AuditEvent.objects.get(action="application.update")
    assert event.details["changed"]["department"] == {"from": "cardiology", "to": "oncology"}


@pytest.mark.parametrize(
    "body",
    [
        {"requests_per_minute": 100_000},
        {"data_policy": "keep_encrypted"},
        {"data_classification": "public"},
        {"status": "disabled"},
        {"owner_id": "oscar"},
        {"department": "x", "tokens_per_minute": 1},
    ],
    ids=["limit", "policy", "classification", "status", "owner", "mixed"],
)
def test_owner_cannot_change_limits_policy_classification_status_or_owner(
    api_as: Any, app_owner: User, oscar: User, owens_app: Application, body: dict[str, Any]
) -> None:
    if body.get("owner_id") == "oscar":
        body = {"owner_id": oscar.pk}
    client = api_as(app_owner)
    before = access_state()
    response = client.patch(f"/applications/{owens_app.pk}", body)
    assert_refused(response, 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_auditor_cannot_change_an_application(
    api_as: Any, auditor: User, owens_app: Application
) -> None:
    client = api_as(auditor)
    before = access_state()
    response = client.patch(f"/applications/{owens_app.pk}", {"description": "audited"})
    assert_refused(response, 403, "permission_denied", before)


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_changes_limits_policy_status_and_owner(
    request: pytest.FixtureRequest,
    api_as: Any,
    app_owner: User,
    oscar: User,
    owens_app: Application,
    role: str,
) -> None:
    response = api_as(request.getfixturevalue(role)).patch(
        f"/applications/{owens_app.pk}",
        {
            "monthly_token_budget": 1_000_000,
            "data_policy": "keep_encrypted",
            "status": "disabled",
            "owner_id": oscar.pk,
        },
    )

    assert response.status_code == 200, response.data
    assert (response.data["owner"], response.data["status"]) == ("oscar", "disabled")
    owens_app.refresh_from_db()
    assert (owens_app.owner, owens_app.monthly_token_budget, owens_app.data_policy) == (
        oscar,
        1_000_000,
        "keep_encrypted",
    )
    changed = AuditEvent.objects.get(action="application.update").details["changed"]
    assert changed["owner_id"] == {"from": app_owner.pk, "to": oscar.pk}
    assert set(changed) == {"monthly_token_budget", "data_policy", "status", "owner_id"}


def test_limit_sent_as_null_is_removed_and_limits_not_sent_are_kept(
    api_as: Any, admin: User, app_owner: User
) -> None:
    application = services.application_create(
        actor=actor(admin),
        name="capped",
        owner=app_owner,
        requests_per_minute=10,
        tokens_per_minute=500,
    )
    response = api_as(admin).patch(f"/applications/{application.pk}", {"requests_per_minute": None})

    assert response.status_code == 200, response.data
    application.refresh_from_db()
    assert (application.requests_per_minute, application.tokens_per_minute) == (None, 500)


def test_reassigned_application_leaves_its_former_owner(
    api_as: Any, admin: User, app_owner: User, oscar: User, owens_app: Application
) -> None:
    owen = api_as(app_owner)
    reassigned = api_as(admin).patch(f"/applications/{owens_app.pk}", {"owner_id": oscar.pk})
    assert reassigned.status_code == 200, reassigned.data

    assert owen.get(f"/applications/{owens_app.pk}").status_code == 404
    assert names(owen.get("/applications")) == []
    assert names(api_as(oscar).get("/applications")) == ["discharge-letters"]


@pytest.mark.parametrize(
    "body",
    [
        {"department": None},
        {"description": None},
        {"data_classification": None},
        {"data_policy": None},
        {"status": None},
        {"owner_id": None},
        {"status": "paused"},
        {"requests_per_minute": -1},
        {"name": "renamed"},
        {"created_by_id": 1},
    ],
    ids=[
        "null-department",
        "null-description",
        "null-classification",
        "null-policy",
        "null-status",
        "null-owner",
        "bad-status",
        "negative-limit",
        "name",
        "created-by",
    ],
)
def test_invalid_or_unknown_update_fields_are_refused(
    api_as: Any, admin: User, owens_app: Application, body: dict[str, Any]
) -> None:
    client = api_as(admin)
    before = access_state()
    response = client.patch(f"/applications/{owens_app.pk}", body)
    assert_refused(response, 422, "validation_error", before)


def test_missing_application_is_404(api_as: Any, admin: User) -> None:
    client = api_as(admin)
    assert client.get(f"/applications/{MISSING}").data["code"] == "not_found"
    before = access_state()
    response = client.patch(f"/applications/{MISSING}", {"description": "x"})
    assert_refused(response, 404, "not_found", before)

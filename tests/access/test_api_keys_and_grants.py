"""API keys and grants through the API: a key's secret is shown once and never again, revocation
works on the next request, only admins and operators grant models, and only approved ones."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.access import services
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry import services as registry
from appliance.registry.models import Adapter, BaseModel
from tests.access.conftest import access_state, assert_refused
from tests.conftest import actor

pytestmark = pytest.mark.django_db

MISSING = 999_999


def keys_path(application: Application) -> str:
    return f"/applications/{application.pk}/keys"


def grants_path(application: Application) -> str:
    return f"/applications/{application.pk}/grants"


@pytest.fixture
def created(api_as: Any, app_owner: User, owens_app: Application) -> dict[str, Any]:
    """A key owen created for his application through the API (the full answer)."""
    response = api_as(app_owner).post(keys_path(owens_app), {"name": "production"})
    assert response.status_code == 201, response.data
    return response.data  # type: ignore[no-any-return]


# --- keys --------------------------------------------------------------------------------------


def test_owner_creates_a_key_whose_secret_is_shown_once(
    api_as: Any, app_owner: User, owens_app: Application, created: dict[str, Any]
) -> None:
    secret, shown = created["secret"], created["key"]
    assert secret.startswith(f"apk_{shown['prefix']}_")
    key = ApiKey.objects.get(pk=shown["id"])
    assert (key.application, key.name, key.created_by) == (owens_app, "production", app_owner)
    assert secret not in (key.prefix, key.key_hash)
    assert (shown["name"], shown["revoked_at"], shown["expires_at"]) == ("production", None, None)
    assert services.api_key_authenticate(plaintext=secret) == key
    event = AuditEvent.objects.get(action="api_key.create")
    assert event.actor_label.startswith("owen via token")
    assert secret not in str(event.details)


def test_key_secret_never_appears_again(
    api_as: Any,
    app_owner: User,
    admin: User,
    auditor: User,
    owens_app: Application,
    created: dict[str, Any],
) -> None:
    for user in (app_owner, admin, auditor):
        client = api_as(user)
        listed = client.get(keys_path(owens_app))
        assert listed.status_code == 200
        assert [item["id"] for item in listed.data["items"]] == [created["key"]["id"]]
        assert "secret" not in listed.data["items"][0]
        for response in (listed, client.get(f"/applications/{owens_app.pk}")):
            assert created["secret"] not in response.content.decode()
    secret_part = created["secret"].split("_", 2)[2]
    assert secret_part not in str(list(AuditEvent.objects.values_list("details", flat=True)))


def test_key_may_be_given_an_expiry(api_as: Any, app_owner: User, owens_app: Application) -> None:
    response = api_as(app_owner).post(keys_path(owens_app), {"name": "temp", "expires_in_days": 7})
    assert response.status_code == 201, response.data
    key = ApiKey.objects.get(pk=response.data["key"]["id"])
    assert key.expires_at is not None
    assert response.data["key"]["expires_at"] is not None


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_may_create_a_key_for_any_application(
    request: pytest.FixtureRequest, api_as: Any, owens_app: Application, role: str
) -> None:
    response = api_as(request.getfixturevalue(role)).post(keys_path(owens_app), {"name": "ops"})
    assert response.status_code == 201, response.data
    assert owens_app.keys.get().created_by == request.getfixturevalue(role)


def test_auditor_sees_keys_but_cannot_create_or_revoke_them(
    api_as: Any, auditor: User, owens_app: Application, created: dict[str, Any]
) -> None:
    client = api_as(auditor)
    assert client.get(keys_path(owens_app)).data["count"] == 1
    before = access_state()
    assert_refused(
        client.post(keys_path(owens_app), {"name": "x"}), 403, "permission_denied", before
    )
    revoke = f"{keys_path(owens_app)}/{created['key']['id']}/revoke"
    assert_refused(client.post(revoke), 403, "permission_denied", before)


@pytest.mark.parametrize(
    "body",
    [{"name": ""}, {"name": "k", "expires_in_days": 0}, {"name": "k", "secret": "mine"}, {}],
    ids=["blank-name", "zero-days", "chosen-secret", "no-name"],
)
def test_invalid_key_request_is_refused(
    api_as: Any, app_owner: User, owens_app: Application, body: dict[str, Any]
) -> None:
    client = api_as(app_owner)
    before = access_state()
    assert_refused(client.post(keys_path(owens_app), body), 422, "validation_error", before)


def test_revoked_key_stops_working_and_revoking_again_changes_nothing(
    api_as: Any, app_owner: User, owens_app: Application, created: dict[str, Any]
) -> None:
    client = api_as(app_owner)
    revoke = f"{keys_path(owens_app)}/{created['key']['id']}/revoke"

    response = client.post(revoke)

    assert response.status_code == 200, response.data
    assert response.data["revoked_at"] is not None
    assert services.api_key_authenticate(plaintext=created["secret"]) is None
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert event.object_id == str(created["key"]["id"])
    before = access_state()
    again = client.post(revoke)
    assert again.status_code == 200
    assert again.data["revoked_at"] == response.data["revoked_at"]
    assert access_state() == before


def test_key_is_revoked_only_under_its_own_application(
    api_as: Any,
    admin: User,
    app_owner: User,
    owens_app: Application,
    oscars_app: Application,
    created: dict[str, Any],
) -> None:
    """A key id under another application's path (even one the caller owns) looks missing."""
    services.application_update(actor=actor(admin), application=oscars_app, owner=app_owner)
    client = api_as(app_owner)
    before = access_state()
    for path in (
        f"{keys_path(oscars_app)}/{created['key']['id']}/revoke",
        f"{keys_path(owens_app)}/{MISSING}/revoke",
    ):
        assert_refused(client.post(path), 404, "not_found", before)
    assert services.api_key_authenticate(plaintext=created["secret"]) is not None


def test_keys_of_a_disabled_application_stop_working(
    api_as: Any, operator: User, owens_app: Application, created: dict[str, Any]
) -> None:
    response = api_as(operator).patch(f"/applications/{owens_app.pk}", {"status": "disabled"})
    assert response.status_code == 200, response.data
    assert services.api_key_authenticate(plaintext=created["secret"]) is None


# --- grants ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_grants_an_approved_model(
    request: pytest.FixtureRequest,
    api_as: Any,
    owens_app: Application,
    approved_model: BaseModel,
    role: str,
) -> None:
    manager = request.getfixturevalue(role)
    response = api_as(manager).post(grants_path(owens_app), {"model_id": approved_model.pk})

    assert response.status_code == 201, response.data
    grant = Grant.objects.get(pk=response.data["id"])
    assert (grant.application, grant.model, grant.adapter, grant.created_by) == (
        owens_app,
        approved_model,
        None,
        manager,
    )
    assert (response.data["model_name"], response.data["adapter_id"]) == ("base-model", None)
    event = AuditEvent.objects.get(action="grant.create")
    assert (event.object_type, event.object_id) == ("grant", str(grant.pk))
    assert event.details == {
        "application": "discharge-letters",
        "model": "base-model",
        "adapter": None,
        "route": None,
    }


def test_model_and_each_of_its_adapters_are_granted_separately(
    api_as: Any,
    admin: User,
    app_owner: User,
    owens_app: Application,
    approved_model: BaseModel,
    approved_adapters: list[Adapter],
) -> None:
    client = api_as(admin)
    triage, billing = approved_adapters
    bodies: list[dict[str, Any]] = [
        {"model_id": approved_model.pk},
        {"model_id": approved_model.pk, "adapter_id": triage.pk},
        {"model_id": approved_model.pk, "adapter_id": billing.pk},
    ]
    for body in bodies:
        assert client.post(grants_path(owens_app), body).status_code == 201

    listed = api_as(app_owner).get(grants_path(owens_app))
    assert listed.status_code == 200
    assert listed.data["count"] == 3
    assert {(g["model_id"], g["adapter_name"]) for g in listed.data["items"]} == {
        (approved_model.pk, None),
        (approved_model.pk, "triage"),
        (approved_model.pk, "billing"),
    }


def test_duplicate_grant_is_a_conflict(
    api_as: Any, admin: User, owens_app: Application, approved_adapters: list[Adapter]
) -> None:
    client = api_as(admin)
    model = approved_adapters[0].base_model
    bodies: list[dict[str, Any]] = [
        {"model_id": model.pk},
        {"model_id": model.pk, "adapter_id": approved_adapters[0].pk},
    ]
    for body in bodies:
        assert client.post(grants_path(owens_app), body).status_code == 201
    before = access_state()
    for body in bodies:
        assert_refused(client.post(grants_path(owens_app), body), 409, "duplicate_grant", before)


def test_same_model_may_be_granted_to_two_applications(
    api_as: Any,
    admin: User,
    owens_app: Application,
    oscars_app: Application,
    approved_model: BaseModel,
) -> None:
    client = api_as(admin)
    for application in (owens_app, oscars_app):
        response = client.post(grants_path(application), {"model_id": approved_model.pk})
        assert response.status_code == 201, response.data
    assert Grant.objects.filter(model=approved_model).count() == 2


def test_model_that_is_not_approved_cannot_be_granted(
    api_as: Any,
    admin: User,
    owens_app: Application,
    pending_model: BaseModel,
    approved_model: BaseModel,
) -> None:
    registry.entry_retire(actor=actor(admin), entry=approved_model)
    client = api_as(admin)
    before = access_state()
    for model in (pending_model, approved_model):
        response = client.post(grants_path(owens_app), {"model_id": model.pk})
        assert_refused(response, 409, "not_approved", before)


def test_adapter_that_is_not_approved_cannot_be_granted(
    api_as: Any, admin: User, owens_app: Application, pending_adapter: Adapter
) -> None:
    client = api_as(admin)
    before = access_state()
    body = {"model_id": pending_adapter.base_model_id, "adapter_id": pending_adapter.pk}
    assert_refused(client.post(grants_path(owens_app), body), 409, "not_approved", before)


def test_adapter_of_another_base_model_is_refused(
    api_as: Any,
    admin: User,
    owens_app: Application,
    approved_model: BaseModel,
    foreign_adapter: Adapter,
) -> None:
    client = api_as(admin)
    before = access_state()
    body = {"model_id": approved_model.pk, "adapter_id": foreign_adapter.pk}
    response = client.post(grants_path(owens_app), body)
    assert_refused(response, 422, "wrong_base_model", before)
    assert "adapter_id" in response.data["fields"]


@pytest.mark.parametrize("field", ["model_id", "adapter_id"])
def test_grant_of_a_missing_model_or_adapter_is_404(
    api_as: Any, admin: User, owens_app: Application, approved_model: BaseModel, field: str
) -> None:
    client = api_as(admin)
    before = access_state()
    body = {"model_id": approved_model.pk, field: MISSING}
    assert_refused(client.post(grants_path(owens_app), body), 404, "not_found", before)


def test_owner_cannot_grant_their_application_a_model(
    api_as: Any, app_owner: User, owens_app: Application, approved_model: BaseModel
) -> None:
    client = api_as(app_owner)
    before = access_state()
    response = client.post(grants_path(owens_app), {"model_id": approved_model.pk})
    assert_refused(response, 403, "permission_denied", before)
    assert AuditEvent.objects.filter(action="permission.denied").count() == 1


def test_auditor_sees_grants_but_cannot_grant(
    api_as: Any, auditor: User, owens_app: Application, approved_model: BaseModel
) -> None:
    client = api_as(auditor)
    assert client.get(grants_path(owens_app)).data == {"items": [], "count": 0}
    before = access_state()
    response = client.post(grants_path(owens_app), {"model_id": approved_model.pk})
    assert_refused(response, 403, "permission_denied", before)


@pytest.fixture
def grant(admin: User, owens_app: Application, approved_model: BaseModel) -> Grant:
    return services.grant_create(actor=actor(admin), application=owens_app, model=approved_model)


@pytest.mark.parametrize("role", ["admin", "operator"])
def test_admin_or_operator_withdraws_a_grant(
    request: pytest.FixtureRequest, api_as: Any, owens_app: Application, grant: Grant, role: str
) -> None:
    response = api_as(request.getfixturevalue(role)).call(
        "delete", f"{grants_path(owens_app)}/{grant.pk}"
    )

    assert response.status_code == 204, response.data
    assert not Grant.objects.exists()
    event = AuditEvent.objects.get(action="grant.delete")
    assert (event.object_id, event.details["model"]) == (str(grant.pk), "base-model")


@pytest.mark.parametrize("who", ["app_owner", "auditor"])
def test_owner_and_auditor_cannot_withdraw_a_grant(
    request: pytest.FixtureRequest, api_as: Any, owens_app: Application, grant: Grant, who: str
) -> None:
    client = api_as(request.getfixturevalue(who))
    before = access_state()
    response = client.call("delete", f"{grants_path(owens_app)}/{grant.pk}")
    assert_refused(response, 403, "permission_denied", before)


def test_grant_is_withdrawn_only_under_its_own_application(
    api_as: Any, admin: User, oscars_app: Application, owens_app: Application, grant: Grant
) -> None:
    client = api_as(admin)
    before = access_state()
    for path in (f"{grants_path(oscars_app)}/{grant.pk}", f"{grants_path(owens_app)}/{MISSING}"):
        assert_refused(client.call("delete", path), 404, "not_found", before)

"""Application services: who may create and change an application and which fields, its audit
trail, and what the gateway's key check accepts. The HTTP side is in test_api_*.py."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from appliance.access import services
from appliance.access.models import ApiKey, Application
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from tests.access.conftest import access_state
from tests.conftest import actor, make_user

pytestmark = pytest.mark.django_db

LIMITS = {
    "requests_per_minute": 60,
    "tokens_per_minute": 20_000,
    "monthly_token_budget": 5_000_000,
    "max_concurrent_requests": 4,
    "max_tokens_per_request": 2048,
}


def audit_actions() -> list[str]:
    return list(AuditEvent.objects.values_list("action", flat=True))


# --- application_create ------------------------------------------------------------------------


def test_app_owner_creates_an_application_owned_by_themselves_with_safe_defaults(
    app_owner: User,
) -> None:
    application = services.application_create(
        actor=actor(app_owner), name="discharge-letters", description="Drafts letters"
    )

    application.refresh_from_db()
    assert (application.owner, application.created_by) == (app_owner, app_owner)
    assert (application.data_classification, application.data_policy, application.status) == (
        "internal",
        "no_content",
        "active",
    )
    assert all(getattr(application, name) is None for name in LIMITS)
    event = AuditEvent.objects.get(action="application.create")
    assert (event.actor_label, event.object_type, event.object_id) == (
        "owen",
        "application",
        str(application.pk),
    )
    assert (event.details["name"], event.details["owner_id"]) == ("discharge-letters", app_owner.pk)


def test_app_owner_may_name_themselves_as_owner(app_owner: User) -> None:
    application = services.application_create(actor=actor(app_owner), name="a", owner=app_owner)
    assert application.owner == app_owner


def test_app_owner_cannot_create_an_application_for_someone_else(
    app_owner: User, oscar: User
) -> None:
    with pytest.raises(PermissionDenied):
        services.application_create(actor=actor(app_owner), name="for-oscar", owner=oscar)

    assert not Application.objects.exists()
    assert audit_actions() == []


@pytest.mark.parametrize("field", ["requests_per_minute", "data_policy"])
def test_app_owner_cannot_set_limits_or_data_policy_when_creating(
    app_owner: User, field: str
) -> None:
    value = "keep_encrypted" if field == "data_policy" else 1_000_000
    with pytest.raises(PermissionDenied):
        services.application_create(actor=actor(app_owner), name="greedy", **{field: value})

    assert not Application.objects.exists()
    assert audit_actions() == []


def test_auditor_cannot_create_applications(auditor: User) -> None:
    with pytest.raises(PermissionDenied):
        services.application_create(actor=actor(auditor), name="audit-app")
    assert not Application.objects.exists()


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR])
@pytest.mark.parametrize("owner_role", [Role.APP_OWNER, Role.ADMIN])
def test_admin_or_operator_may_name_an_active_app_owner_or_admin_as_owner_and_set_limits(
    role: str, owner_role: str
) -> None:
    manager, owner = make_user("manager", role), make_user("future-owner", owner_role)

    application = services.application_create(
        actor=actor(manager),
        name="fraud-screen",
        owner=owner,
        data_classification="restricted",
        data_policy="keep_encrypted",
        **LIMITS,
    )

    application.refresh_from_db()
    assert (application.owner, application.created_by) == (owner, manager)
    assert (application.data_classification, application.data_policy) == (
        "restricted",
        "keep_encrypted",
    )
    assert {name: getattr(application, name) for name in LIMITS} == LIMITS
    event = AuditEvent.objects.get(action="application.create")
    assert event.details["requests_per_minute"] == 60


@pytest.mark.parametrize(
    "who", ["operator", "auditor", "inactive app owner"], ids=lambda who: who.replace(" ", "_")
)
def test_owner_must_be_an_active_app_owner_or_admin(admin: User, who: str) -> None:
    if who == "inactive app owner":
        owner = make_user("ivan", Role.APP_OWNER)
        owner.is_active = False
        owner.save(update_fields=["is_active"])
    else:
        owner = make_user("someone", who)

    with pytest.raises(ValidationFailed) as refused:
        services.application_create(actor=actor(admin), name="orphan", owner=owner)

    assert "owner_id" in refused.value.fields
    assert not Application.objects.exists()
    assert audit_actions() == []


def test_duplicate_application_name_is_a_conflict(owens_app: Application, oscar: User) -> None:
    before = access_state()
    with pytest.raises(Conflict) as refused:
        services.application_create(actor=actor(oscar), name=owens_app.name)
    assert refused.value.code == "duplicate_name"
    assert access_state() == before


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "   "},
        {"name": "x", "requests_per_minute": 0},
        {"name": "x", "monthly_token_budget": -5},
        {"name": "x", "data_classification": "top-secret"},
        {"name": "x", "data_policy": "keep_everything"},
    ],
    ids=["blank-name", "zero-limit", "negative-budget", "bad-classification", "bad-policy"],
)
def test_invalid_application_is_refused_and_not_stored(admin: User, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationFailed):
        services.application_create(actor=actor(admin), owner=admin, **bad)
    assert not Application.objects.exists()
    assert audit_actions() == []


# --- application_update ------------------------------------------------------------------------


def test_owner_may_change_description_and_department_and_the_change_is_audited(
    app_owner: User, owens_app: Application
) -> None:
    updated = services.application_update(
        actor=actor(app_owner),
        application=owens_app,
        description="Letters for cardiology",
        department="cardiology-2",
    )

    updated.refresh_from_db()
    assert (updated.description, updated.department) == ("Letters for cardiology", "cardiology-2")
    event = AuditEvent.objects.get(action="application.update")
    assert (event.actor_label, event.object_id) == ("owen", str(owens_app.pk))
    assert set(event.details["changed"]) == {"description", "department"}
    assert event.details["changed"]["department"] == {"from": "cardiology", "to": "cardiology-2"}


@pytest.mark.parametrize(
    "change",
    [
        {"requests_per_minute": 10_000},
        {"monthly_token_budget": None},
        {"data_policy": "keep_encrypted"},
        {"data_classification": "public"},
        {"status": "disabled"},
        {"owner": "oscar"},
        {"department": "x", "max_tokens_per_request": 100_000},
    ],
    ids=["limit", "budget", "policy", "classification", "status", "owner", "mixed"],
)
def test_owner_cannot_change_limits_policy_classification_status_or_owner(
    app_owner: User, oscar: User, admin: User, change: dict[str, Any]
) -> None:
    application = services.application_create(
        actor=actor(admin), name="capped", owner=app_owner, monthly_token_budget=1000
    )
    if change.get("owner") == "oscar":
        change = {"owner": oscar}
    before = access_state()

    with pytest.raises(PermissionDenied):
        services.application_update(actor=actor(app_owner), application=application, **change)

    assert access_state() == before


@pytest.mark.parametrize("who", ["oscar", "auditor"])
def test_neither_another_owner_nor_an_auditor_may_change_an_application(
    owens_app: Application, oscar: User, auditor: User, who: str
) -> None:
    user = oscar if who == "oscar" else auditor
    before = access_state()
    with pytest.raises(PermissionDenied):
        services.application_update(actor=actor(user), application=owens_app, department="mine")
    assert access_state() == before


@pytest.mark.parametrize("role", [Role.ADMIN, Role.OPERATOR])
def test_admin_or_operator_may_change_limits_policy_classification_status_and_owner(
    role: str, owens_app: Application, app_owner: User, oscar: User
) -> None:
    manager = make_user("manager", role)

    services.application_update(
        actor=actor(manager),
        application=owens_app,
        requests_per_minute=30,
        data_policy="keep_encrypted",
        data_classification="restricted",
        status="disabled",
        owner=oscar,
    )

    owens_app.refresh_from_db()
    assert (owens_app.requests_per_minute, owens_app.data_policy) == (30, "keep_encrypted")
    assert (owens_app.data_classification, owens_app.status, owens_app.owner) == (
        "restricted",
        "disabled",
        oscar,
    )
    event = AuditEvent.objects.get(action="application.update")
    assert event.details["changed"] == {
        "requests_per_minute": {"from": None, "to": 30},
        "data_policy": {"from": "no_content", "to": "keep_encrypted"},
        "data_classification": {"from": "internal", "to": "restricted"},
        "status": {"from": "active", "to": "disabled"},
        "owner_id": {"from": app_owner.pk, "to": oscar.pk},
    }


def test_limit_sent_as_none_is_removed(admin: User, app_owner: User) -> None:
    application = services.application_create(
        actor=actor(admin), name="capped", owner=app_owner, tokens_per_minute=500
    )
    services.application_update(actor=actor(admin), application=application, tokens_per_minute=None)
    application.refresh_from_db()
    assert application.tokens_per_minute is None
    event = AuditEvent.objects.get(action="application.update")
    assert event.details["changed"] == {"tokens_per_minute": {"from": 500, "to": None}}


def test_update_that_changes_no_managed_field_writes_no_event(
    admin: User, owens_app: Application
) -> None:
    before = access_state()
    services.application_update(
        actor=actor(admin),
        application=owens_app,
        status="active",
        requests_per_minute=None,
        department=owens_app.department,
    )
    assert access_state() == before


def test_owner_resending_the_same_description_writes_no_event(
    app_owner: User, owens_app: Application
) -> None:
    before = access_state()
    services.application_update(
        actor=actor(app_owner), application=owens_app, description=owens_app.description
    )
    assert access_state() == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"status": "paused"}, "status"),
        ({"data_classification": "top-secret"}, "data_classification"),
        ({"data_policy": "keep_everything"}, "data_policy"),
        ({"owner": None}, "owner_id"),
        ({"owner": "operator"}, "owner_id"),
    ],
    ids=["zero-limit", "status", "classification", "policy", "no-owner", "operator-owner"],
)
def test_invalid_update_is_refused_and_changes_nothing(
    admin: User, operator: User, owens_app: Application, change: dict[str, Any], field: str
) -> None:
    if change.get("owner") == "operator":
        change = {"owner": operator}
    before = access_state()
    with pytest.raises(ValidationFailed) as refused:
        services.application_update(actor=actor(admin), application=owens_app, **change)
    assert field in refused.value.fields
    assert access_state() == before


# --- api_key_create and api_key_authenticate ----------------------------------------------------


def test_key_is_returned_once_as_apk_and_stored_as_prefix_and_sha256(
    app_owner: User, owens_app: Application
) -> None:
    key, plaintext = services.api_key_create(
        actor=actor(app_owner), application=owens_app, name="production"
    )

    match = re.fullmatch(r"apk_([0-9a-f]{12})_(.+)", plaintext)
    assert match is not None and len(match.group(2)) >= 43  # 32 random bytes, URL-safe base64
    key.refresh_from_db()
    assert (key.application, key.name, key.created_by) == (owens_app, "production", app_owner)
    assert key.prefix == match.group(1)
    assert key.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert (key.expires_at, key.revoked_at, key.last_used_at) == (None, None, None)
    event = AuditEvent.objects.get(action="api_key.create")
    assert (event.object_type, event.object_id) == ("api_key", str(key.pk))
    assert event.details["prefix"] == key.prefix
    assert match.group(2) not in str(event.details)
    assert services.api_key_authenticate(plaintext=plaintext) == key


def test_key_expiry_is_counted_from_creation(app_owner: User, owens_app: Application) -> None:
    key, _ = services.api_key_create(
        actor=actor(app_owner), application=owens_app, name="temp", expires_in_days=30
    )
    assert key.expires_at is not None
    assert abs(key.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "bad",
    [{"name": " "}, {"name": "k", "expires_in_days": 0}, {"name": "k", "expires_in_days": 367}],
)
def test_invalid_key_request_is_refused_and_stores_nothing(
    app_owner: User, owens_app: Application, bad: dict[str, Any]
) -> None:
    before = access_state()
    with pytest.raises(ValidationFailed):
        services.api_key_create(actor=actor(app_owner), application=owens_app, **bad)
    assert access_state() == before


@pytest.mark.parametrize("who", ["oscar", "auditor"])
def test_neither_another_owner_nor_an_auditor_may_create_a_key(
    owens_app: Application, oscar: User, auditor: User, who: str
) -> None:
    user = oscar if who == "oscar" else auditor
    before = access_state()
    with pytest.raises(PermissionDenied):
        services.api_key_create(actor=actor(user), application=owens_app, name="stolen")
    assert access_state() == before


@pytest.fixture
def key_and_secret(app_owner: User, owens_app: Application) -> tuple[ApiKey, str]:
    return services.api_key_create(actor=actor(app_owner), application=owens_app, name="prod")


def test_unknown_or_tampered_or_foreign_kind_key_does_not_authenticate(
    key_and_secret: tuple[ApiKey, str],
) -> None:
    _, secret = key_and_secret
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    other_prefix = "apk_" + "0" * 12 + secret[16:]
    for plaintext in (tampered, other_prefix, "apt" + secret[3:], "apk_short", "", secret + "x"):
        assert services.api_key_authenticate(plaintext=plaintext) is None, plaintext


def test_revoked_key_no_longer_authenticates_and_revoking_again_changes_nothing(
    app_owner: User, key_and_secret: tuple[ApiKey, str]
) -> None:
    key, secret = key_and_secret
    services.api_key_revoke(actor=actor(app_owner), key=key)
    key.refresh_from_db()
    revoked_at = key.revoked_at
    assert revoked_at is not None
    assert services.api_key_authenticate(plaintext=secret) is None
    event = AuditEvent.objects.get(action="api_key.revoke")
    assert (event.object_id, event.details["prefix"]) == (str(key.pk), key.prefix)

    before = access_state()
    services.api_key_revoke(actor=actor(app_owner), key=key)
    assert access_state() == before
    key.refresh_from_db()
    assert key.revoked_at == revoked_at


@pytest.mark.parametrize("who", ["oscar", "auditor"])
def test_neither_another_owner_nor_an_auditor_may_revoke_a_key(
    key_and_secret: tuple[ApiKey, str], oscar: User, auditor: User, who: str
) -> None:
    key, secret = key_and_secret
    before = access_state()
    with pytest.raises(PermissionDenied):
        services.api_key_revoke(actor=actor(oscar if who == "oscar" else auditor), key=key)
    assert access_state() == before
    assert services.api_key_authenticate(plaintext=secret) == key


def test_expired_key_does_not_authenticate(key_and_secret: tuple[ApiKey, str]) -> None:
    key, secret = key_and_secret
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.api_key_authenticate(plaintext=secret) is None


def test_key_of_a_disabled_application_does_not_authenticate_until_it_is_enabled(
    admin: User, owens_app: Application, key_and_secret: tuple[ApiKey, str]
) -> None:
    key, secret = key_and_secret
    services.application_update(actor=actor(admin), application=owens_app, status="disabled")
    assert services.api_key_authenticate(plaintext=secret) is None

    services.application_update(actor=actor(admin), application=owens_app, status="active")
    assert services.api_key_authenticate(plaintext=secret) == key

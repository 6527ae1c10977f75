"""Break-glass (emergency) access: opened by another admin with a reason and their second
factor, in force only for its time, ended early or by itself, and audited as high severity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from appliance.accounts import break_glass
from appliance.accounts.actors import actor_for_user
from appliance.accounts.choices import Role
from appliance.accounts.models import BreakGlass, User
from appliance.accounts.permissions import Capability, allows
from appliance.accounts.tasks import expire_break_glass
from appliance.audit.models import AuditEvent
from appliance.core.errors import (
    Conflict,
    NotAuthenticated,
    PermissionDenied,
    ValidationFailed,
)
from tests.conftest import actor, fresh_code, with_authenticator

pytestmark = pytest.mark.django_db
REASON = "ICU ward system down; operator must redeploy the triage model now"


@pytest.fixture
def ready(admin: User, operator: User) -> tuple[User, User]:
    with_authenticator(admin)
    with_authenticator(operator)
    return admin, operator


def open_for(admin: User, person: User, **overrides: Any) -> BreakGlass:
    arguments = {"reason": REASON, "minutes": 30, **overrides}
    if "code" not in arguments:
        arguments["code"] = fresh_code(admin)
    return break_glass.break_glass_grant(actor=actor(admin), user=person, **arguments)


def test_a_person_acts_as_an_admin_while_emergency_access_is_open(
    ready: tuple[User, User],
) -> None:
    admin, operator = ready
    assert not allows(actor_for_user(operator), Capability.USERS_MANAGE)
    grant = open_for(admin, operator)
    elevated = actor_for_user(operator)
    assert elevated.role == Role.ADMIN and allows(elevated, Capability.USERS_MANAGE)
    operator.refresh_from_db()
    assert operator.role == Role.OPERATOR  # their own role is unchanged
    event = AuditEvent.objects.get(action="access.break_glass_grant")
    assert (event.actor_label, event.object_id) == ("alice", str(operator.pk))
    assert event.details["severity"] == "high" and event.details["reason"] == REASON
    assert event.details["break_glass"] == grant.pk


def test_it_ends_by_itself_and_the_expiry_is_recorded_once(ready: tuple[User, User]) -> None:
    admin, operator = ready
    grant = open_for(admin, operator)
    BreakGlass.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert actor_for_user(operator).role == Role.OPERATOR  # over, whether or not the job ran
    assert expire_break_glass() == 1
    assert expire_break_glass() == 0
    event = AuditEvent.objects.get(action="access.break_glass_expire")
    assert event.actor_kind == "system" and event.details["severity"] == "high"


def test_an_admin_ends_it_early(ready: tuple[User, User], admin2: User) -> None:
    admin, operator = ready
    grant = open_for(admin, operator)
    break_glass.break_glass_end(actor=actor(admin2), grant_id=grant.pk)
    assert actor_for_user(operator).role == Role.OPERATOR
    assert AuditEvent.objects.get(action="access.break_glass_end").actor_label == "bob"
    with pytest.raises(Conflict):
        break_glass.break_glass_end(actor=actor(admin2), grant_id=grant.pk)
    assert expire_break_glass() == 0  # its end is recorded already


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"reason": "because"}, "reason"), ({"minutes": 600}, "minutes"), ({"minutes": 1}, "minutes")],
)
def test_a_short_reason_or_a_bad_duration_is_refused(
    ready: tuple[User, User], overrides: dict[str, Any], field: str
) -> None:
    admin, operator = ready
    with pytest.raises(ValidationFailed) as refused:
        open_for(admin, operator, **overrides)
    assert field in refused.value.fields
    assert not BreakGlass.objects.exists()


def test_the_granting_admin_must_give_their_own_code(ready: tuple[User, User]) -> None:
    admin, operator = ready
    with pytest.raises(NotAuthenticated):
        open_for(admin, operator, code="000000")
    assert not BreakGlass.objects.exists()
    assert not AuditEvent.objects.filter(action="access.break_glass_grant").exists()


def test_only_admins_open_it_and_never_for_themselves(
    ready: tuple[User, User], auditor: User
) -> None:
    admin, operator = ready
    with pytest.raises(PermissionDenied):
        break_glass.break_glass_grant(
            actor=actor(operator), user=auditor, reason=REASON, minutes=30, code="123456"
        )
    with pytest.raises(PermissionDenied):
        open_for(admin, admin)
    assert not BreakGlass.objects.exists()


def test_the_person_needs_an_authenticator_and_only_one_grant_at_a_time(
    ready: tuple[User, User], auditor: User
) -> None:
    admin, operator = ready
    with pytest.raises(Conflict) as refused:
        open_for(admin, auditor)
    assert refused.value.code == "mfa_not_enrolled"
    open_for(admin, operator)
    with pytest.raises(Conflict) as again:
        open_for(admin, operator, code="000000")  # refused before the code is looked at
    assert again.value.code == "already_open"
    assert BreakGlass.objects.count() == 1


def test_the_api_opens_lists_and_ends_emergency_access(
    ready: tuple[User, User], api_as: Any
) -> None:
    admin, operator = ready
    api = api_as(admin)
    body = {"user_id": operator.pk, "reason": REASON, "minutes": 15, "code": fresh_code(admin)}
    opened = api.post("/break-glass", body)
    assert opened.status_code == 201, opened.data
    assert (opened.data["username"], opened.data["granted_by"], opened.data["open"]) == (
        "olga",
        "alice",
        True,
    )
    assert api.get("/break-glass").data["items"][0]["id"] == opened.data["id"]
    ended = api.post(f"/break-glass/{opened.data['id']}/end")
    assert (ended.status_code, ended.data["open"], ended.data["ended_by"]) == (200, False, "alice")
    again = api.post(f"/break-glass/{opened.data['id']}/end")
    assert (again.status_code, again.data["code"]) == (409, "already_ended")

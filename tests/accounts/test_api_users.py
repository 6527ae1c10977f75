"""Users and roles over the API: who may create, change and deactivate whom."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.accounts.models import User
from appliance.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_admin_creates_a_user_with_a_generated_password_shown_once(
    api_as: Any, admin: User
) -> None:
    response = api_as(admin).post("/users", {"username": "carol", "role": "auditor"})
    assert response.status_code == 201
    password = response.data["initial_password"]
    carol = User.objects.get(username="carol")
    assert carol.role == "auditor" and carol.check_password(password)
    assert carol.password.startswith(("argon2", "md5"))  # hashed, never plain
    event = AuditEvent.objects.get(action="user.create", object_id=str(carol.pk))
    assert event.actor_label == "alice via token " + event.actor_label.split()[-1]
    assert password not in str(event.details)
    assert "initial_password" not in api_as(admin).get(f"/users/{carol.pk}").data


def test_weak_password_is_refused_with_field_errors(api_as: Any, admin: User) -> None:
    response = api_as(admin).post(
        "/users", {"username": "carol", "role": "auditor", "password": "password1234"}
    )
    assert response.status_code == 422
    assert response.data["fields"]["password"]
    assert not User.objects.filter(username="carol").exists()


def test_password_over_128_characters_is_refused(api_as: Any, admin: User) -> None:
    response = api_as(admin).post(
        "/users", {"username": "carol", "role": "auditor", "password": "Zq9!" * 33}
    )
    assert response.status_code == 422


def test_duplicate_user_name_is_a_conflict(api_as: Any, admin: User, operator: User) -> None:
    response = api_as(admin).post("/users", {"username": "OLGA", "role": "auditor"})
    assert response.status_code == 409
    assert response.data["code"] == "duplicate_username"


def test_unknown_role_or_extra_field_is_refused(api_as: Any, admin: User) -> None:
    assert api_as(admin).post("/users", {"username": "c", "role": "root"}).status_code == 422
    extra = api_as(admin).post("/users", {"username": "c", "role": "auditor", "is_superuser": True})
    assert extra.status_code == 422
    assert not User.objects.filter(username="c").exists()


@pytest.mark.parametrize("persona", ["operator", "auditor", "app_owner"])
def test_only_admins_create_users_and_denials_are_audited(
    api_as: Any, persona: str, request: pytest.FixtureRequest
) -> None:
    user = request.getfixturevalue(persona)
    response = api_as(user).post("/users", {"username": "mallory", "role": "admin"})
    assert response.status_code == 403
    assert response.data["code"] == "permission_denied"
    assert not User.objects.filter(username="mallory").exists()
    denial = AuditEvent.objects.get(action="permission.denied")
    assert denial.outcome == "denied" and denial.actor_label.startswith(user.username)


def test_app_owner_cannot_promote_themselves(api_as: Any, app_owner: User) -> None:
    response = api_as(app_owner).patch(f"/users/{app_owner.pk}", {"role": "admin"})
    assert response.status_code == 403
    app_owner.refresh_from_db()
    assert app_owner.role == "app_owner"


def test_admin_changes_a_role_and_the_event_records_before_and_after(
    api_as: Any, admin: User, operator: User
) -> None:
    response = api_as(admin).patch(f"/users/{operator.pk}", {"role": "auditor"})
    assert response.status_code == 200 and response.data["role"] == "auditor"
    event = AuditEvent.objects.get(action="user.update")
    assert event.details["role"] == {"from": "operator", "to": "auditor"}


def test_last_admin_cannot_be_demoted_or_deactivated(
    api_as: Any, admin: User, admin2: User
) -> None:
    client = api_as(admin)
    assert client.post(f"/users/{admin2.pk}/deactivate").status_code == 200
    response = client.patch(f"/users/{admin.pk}", {"role": "operator"})
    assert response.status_code == 409 and response.data["code"] == "last_admin"
    assert client.post(f"/users/{admin.pk}/deactivate").status_code == 409


def test_auditor_lists_users_but_app_owner_sees_only_themselves(
    api_as: Any, auditor: User, app_owner: User, admin: User
) -> None:
    listed = api_as(auditor).get("/users?role=admin")
    assert listed.status_code == 200
    assert [u["username"] for u in listed.data["items"]] == ["alice"]
    assert api_as(app_owner).get("/users").status_code == 403
    assert api_as(app_owner).get(f"/users/{admin.pk}").status_code == 404
    assert api_as(app_owner).get(f"/users/{app_owner.pk}").status_code == 200


def test_reactivated_user_is_audited(api_as: Any, admin: User, operator: User) -> None:
    client = api_as(admin)
    client.post(f"/users/{operator.pk}/deactivate")
    assert client.post(f"/users/{operator.pk}/activate").data["is_active"] is True
    assert [
        e.action for e in AuditEvent.objects.filter(object_type="user", object_id=str(operator.pk))
    ] == ["user.deactivate", "user.activate"]


def test_missing_user_is_404(api_as: Any, admin: User) -> None:
    response = api_as(admin).get("/users/999999")
    assert response.status_code == 404 and response.data["code"] == "not_found"


def test_user_list_paginates(api_as: Any, admin: User, operator: User, auditor: User) -> None:
    page = api_as(admin).get("/users?limit=2&offset=1").data
    assert page["count"] == 3
    assert [u["username"] for u in page["items"]] == ["audrey", "olga"]

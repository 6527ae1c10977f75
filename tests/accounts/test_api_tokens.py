"""Personal API tokens: shown once, stored hashed, revocable, expiring, header-only."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from appliance.accounts.models import ApiToken, User
from appliance.audit.models import AuditEvent
from tests.conftest import ApiClient

pytestmark = pytest.mark.django_db


def test_created_token_is_shown_once_and_stored_as_prefix_and_hash(
    api_as: Any, operator: User
) -> None:
    response = api_as(operator).post("/tokens", {"name": "deploy script", "expires_in_days": 30})
    assert response.status_code == 201
    secret = response.data["secret"]
    assert secret.startswith("apt_") and len(secret) > 50
    token = ApiToken.objects.get(pk=response.data["token"]["id"])
    assert secret not in (token.prefix, token.secret_hash)
    assert token.secret_hash != secret and len(token.secret_hash) == 64
    assert "secret" not in api_as(operator).get("/tokens").data["items"][0]
    assert ApiClient(secret).get("/auth/me").data["username"] == "olga"
    event = AuditEvent.objects.get(action="token.create", object_id=str(token.pk))
    assert secret not in str(event.details)


def test_revoked_token_stops_working_on_the_next_request(api_as: Any, operator: User) -> None:
    client = api_as(operator)
    created = client.post("/tokens", {"name": "temp"}).data
    other = ApiClient(created["secret"])
    assert other.get("/auth/me").status_code == 200
    assert client.post(f"/tokens/{created['token']['id']}/revoke").status_code == 200
    assert other.get("/auth/me").status_code == 401


def test_expired_token_is_refused(api_as: Any, operator: User) -> None:
    created = api_as(operator).post("/tokens", {"name": "short", "expires_in_days": 1}).data
    ApiToken.objects.filter(pk=created["token"]["id"]).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert ApiClient(created["secret"]).get("/auth/me").status_code == 401


def test_token_in_the_query_string_is_not_accepted(api_as: Any, operator: User) -> None:
    created = api_as(operator).post("/tokens", {"name": "q"}).data
    response = Client().get(
        f"/api/v1/auth/me?token={created['secret']}&api_key={created['secret']}"
    )
    assert response.status_code == 401


def test_tampered_token_is_refused(api_as: Any, operator: User) -> None:
    secret = api_as(operator).post("/tokens", {"name": "t"}).data["secret"]
    assert (
        ApiClient(secret[:-1] + ("A" if secret[-1] != "A" else "B")).get("/auth/me").status_code
        == 401
    )


def test_someone_elses_token_looks_missing(api_as: Any, operator: User, auditor: User) -> None:
    created = api_as(operator).post("/tokens", {"name": "mine"}).data
    response = api_as(auditor).post(f"/tokens/{created['token']['id']}/revoke")
    assert response.status_code == 404
    assert ApiToken.objects.get(pk=created["token"]["id"]).revoked_at is None


def test_admin_may_revoke_anyones_token(api_as: Any, operator: User, admin: User) -> None:
    created = api_as(operator).post("/tokens", {"name": "mine"}).data
    assert api_as(admin).post(f"/tokens/{created['token']['id']}/revoke").status_code == 200
    assert ApiClient(created["secret"]).get("/auth/me").status_code == 401


def test_deactivating_a_user_kills_their_tokens(api_as: Any, admin: User, operator: User) -> None:
    secret = api_as(operator).post("/tokens", {"name": "mine"}).data["secret"]
    assert api_as(admin).post(f"/users/{operator.pk}/deactivate").status_code == 200
    assert ApiClient(secret).get("/auth/me").status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x", "expires_in_days": 0},
        {"name": "x", "expires_in_days": 400},
        {"name": "x", "owner": 1},
    ],
)
def test_bad_token_requests_are_refused_and_create_nothing(
    api_as: Any, operator: User, body: dict[str, Any]
) -> None:
    client = api_as(operator)
    before = ApiToken.objects.count()
    response = client.post("/tokens", body)
    assert response.status_code == 422
    assert response.data["code"] == "validation_error"
    assert ApiToken.objects.count() == before

"""Personas (admin, second admin, operator, auditor, app owner, outsider) and API clients."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from appliance.accounts.actors import actor_for_user
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.accounts.services import token_create
from appliance.core.actors import Actor
from appliance.core.crypto import master_keys

PASSWORD = "correct horse battery staple 42"


@pytest.fixture(autouse=True)
def _fast_and_isolated(settings: Any, tmp_path: Path) -> None:
    """Fast hashing, eager jobs, and a private artifact store, import root and cache per test."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.APPLIANCE_ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.APPLIANCE_STAGING_DIR = tmp_path / "staging"
    settings.APPLIANCE_IMPORT_ROOTS = [tmp_path / "import"]
    (tmp_path / "import").mkdir()
    settings.APPLIANCE_MASTER_KEY_PATH = tmp_path / "master.key"
    settings.APPLIANCE_AUDIT_EXPORT_DIR = tmp_path / "exports"
    master_keys.cache_clear()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": str(tmp_path),
        }
    }
    from appliance.celery import app

    app.conf.task_always_eager = True


@pytest.fixture
def import_root(tmp_path: Path) -> Path:
    return tmp_path / "import"


def make_user(username: str, role: str) -> User:
    user = User(username=username, role=role, email=f"{username}@hospital.example")
    user.set_password(PASSWORD)
    user.save()
    return user


@pytest.fixture
def admin(db: None) -> User:
    return make_user("alice", Role.ADMIN)


@pytest.fixture
def admin2(db: None) -> User:
    return make_user("bob", Role.ADMIN)


@pytest.fixture
def operator(db: None) -> User:
    return make_user("olga", Role.OPERATOR)


@pytest.fixture
def auditor(db: None) -> User:
    return make_user("audrey", Role.AUDITOR)


@pytest.fixture
def app_owner(db: None) -> User:
    return make_user("owen", Role.APP_OWNER)


def actor(user: User) -> Actor:
    return actor_for_user(user)


class ApiClient:
    """The management API as a script sees it: JSON in, JSON out, a Bearer token."""

    def __init__(self, token: str | None) -> None:
        self.client = Client()
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None, **extra: Any) -> Any:
        kwargs: dict[str, Any] = {"headers": {**self.headers, **extra.pop("headers", {})}}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        response = getattr(self.client, method)(f"/api/v1{path}", **kwargs, **extra)
        response.data = response.json() if response.content else None
        return response

    def get(self, path: str, **extra: Any) -> Any:
        return self.call("get", path, **extra)

    def post(self, path: str, body: Any = None, **extra: Any) -> Any:
        return self.call("post", path, body if body is not None else {}, **extra)

    def patch(self, path: str, body: Any, **extra: Any) -> Any:
        return self.call("patch", path, body, **extra)


@pytest.fixture
def api_as(db: None) -> Any:
    """``api_as(user)`` → a client holding a fresh API token of that user; ``api_as(None)`` → anonymous."""

    def build(user: User | None) -> ApiClient:
        if user is None:
            return ApiClient(None)
        _, secret = token_create(actor=actor(user), name="test")
        return ApiClient(secret)

    return build


def with_authenticator(user: User) -> str:
    """Set up an authenticator for ``user`` as they would in the console; returns its secret."""
    from appliance.accounts import mfa, totp

    secret = mfa.totp_begin(user=user)
    mfa.totp_confirm(user=user, code=totp.code_at(secret, totp.current_step()))
    return secret


def fresh_code(user: User) -> str:
    """A code ``user``'s authenticator would show that has not been used yet (each code works
    once; the step after the current one is accepted for clock drift)."""
    from appliance.accounts import mfa, totp
    from appliance.accounts.models import TotpDevice

    device = TotpDevice.objects.get(user=user)
    step = max(device.last_step + 1, totp.current_step() - totp.DRIFT_STEPS)
    assert step <= totp.current_step() + totp.DRIFT_STEPS, "no unused code left in this window"
    return totp.code_at(mfa.device_secret(device), step)

"""Sign-in throttling on the production cache (a real Redis), shared by every gateway process."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import redis
from django.core.cache import caches
from django.test import Client

from appliance.accounts.models import User
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/15"


@pytest.fixture
def redis_cache(settings: Any) -> Any:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"test-{os.getpid()}",
        }
    }
    caches["default"].clear()
    yield redis.Redis.from_url(REDIS_URL)
    caches["default"].clear()


def test_failed_sign_ins_are_counted_in_redis_and_throttle_everyone(
    redis_cache: Any, admin: User, settings: Any
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    body = json.dumps({"username": "alice", "password": "wrong password 123"})
    for _ in range(2):
        Client().post("/api/v1/auth/login", data=body, content_type="application/json")
    keys = [k.decode() for k in redis_cache.keys(f"test-{os.getpid()}:*login-fail:user:*")]
    assert len(keys) == 1 and "alice" not in keys[0]  # the user name is pseudonymised
    good = json.dumps({"username": "alice", "password": PASSWORD})
    response = Client().post("/api/v1/auth/login", data=good, content_type="application/json")
    assert response.status_code == 429

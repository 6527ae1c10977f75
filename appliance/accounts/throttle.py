"""Throttling of failed sign-ins, per user name and per source address.

Counts live in the shared cache (Redis in production, files in embedded mode). Unknown user names
are counted like known ones, so the answer never reveals whether an account exists.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from appliance.core.secrets import pseudonym
from appliance.core.throttle import count_failure, retry_after


def _keys(username: str, source_ip: str) -> list[str]:
    keys = [f"login-fail:user:{pseudonym(username.lower())}"]
    if source_ip:
        keys.append(f"login-fail:ip:{source_ip}")
    return keys


def login_retry_after(*, username: str, source_ip: str) -> int:
    """Seconds until another attempt is allowed, 0 if it is allowed now."""
    return max((retry_after(key, _limit(key)) for key in _keys(username, source_ip)), default=0)


def login_failed(*, username: str, source_ip: str) -> None:
    """Count a failure; the window restarts at each failure."""
    for key in _keys(username, source_ip):
        count_failure(key, settings.APPLIANCE_LOGIN_WINDOW_SECONDS)


def login_succeeded(*, username: str) -> None:
    """Forget a user name's failures after a good sign-in (the address keeps its count)."""
    cache.delete(_keys(username, "")[0])


def _limit(key: str) -> int:
    # An address may front many people (a NAT or a terminal server), so it gets more slack.
    per_user = settings.APPLIANCE_LOGIN_MAX_FAILURES
    return per_user * 4 if key.startswith("login-fail:ip:") else per_user

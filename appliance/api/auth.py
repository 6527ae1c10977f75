"""How management API callers prove who they are: a session cookie (with CSRF on unsafe methods)
or a personal API token in ``Authorization: Bearer``. Never a token in the query string."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer, SessionAuth

from appliance.accounts.actors import actor_for_token, actor_for_user
from appliance.accounts.models import User
from appliance.accounts.services import token_authenticate
from appliance.core.actors import Actor


class TokenAuth(HttpBearer):
    """Personal API tokens (``apt_…``)."""

    def authenticate(self, request: HttpRequest, token: str) -> Actor | None:
        found = token_authenticate(plaintext=token)
        return actor_for_token(found) if found else None


class CookieSessionAuth(SessionAuth):
    """The console's session; ninja checks the CSRF token for unsafe methods."""

    def _get_key(self, request: HttpRequest) -> str | None:
        # Without a session cookie there is nothing to forge: answer 401 (not a CSRF 403).
        if self.param_name not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: Any) -> Actor | None:
        user = request.user
        if isinstance(user, User) and user.is_active:
            return actor_for_user(user)
        return None


AUTH = [TokenAuth(), CookieSessionAuth()]

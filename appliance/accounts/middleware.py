"""Server-side session limits: a signed-in session ends after the idle limit (15 minutes by
default) or the absolute limit, or when its record was deleted (signed out elsewhere, revoked),
whatever the cookie says."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponseBase

from appliance.accounts import sessions
from appliance.accounts.models import User
from appliance.accounts.signin import SESSION_RECORD
from appliance.core.middleware import DualMiddleware

ENDED = "appliance_session_ended"  # why the last session ended, for the sign-in page
BACKGROUND_HEADER = "X-Console-Background"  # a page's own refresh: not a sign of a person


class SessionLimitsMiddleware(DualMiddleware):
    """After AuthenticationMiddleware. Requests without a session cookie (the gateway's, API
    tokens') pass without touching the database or a thread."""

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            enforce_limits(request)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if settings.SESSION_COOKIE_NAME in request.COOKIES:
            await sync_to_async(enforce_limits)(request)
        return await self.get_response(request)


def enforce_limits(request: HttpRequest) -> None:
    user = request.user
    if not isinstance(user, User):
        return
    check = sessions.session_check(
        record_id=request.session.get(SESSION_RECORD),
        user=user,
        activity=BACKGROUND_HEADER not in request.headers,
    )
    if check.record is None:
        logout(request)  # flushes the session; request.user is anonymous from here
        request.session[ENDED] = check.ended

"""Turning a checked person into a signed-in request, for the API and the console alike: the
second-factor rule, the new session (new id, so no fixation) and its record."""

from __future__ import annotations

from django.contrib.auth import login, logout
from django.http import HttpRequest

from appliance.accounts import mfa, services, sessions
from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User
from appliance.core.context import current_source_ip
from appliance.core.errors import PermissionDenied

SESSION_RECORD = "appliance_session"  # the UserSession id, in Django's session


def second_factor(user: User, code: str | None) -> str:
    """The method by which ``user`` gave a second factor (none if they have no authenticator
    and their role does not need one). Raises if a code is missing or wrong, or if the role
    needs an authenticator that is not set up (set up in the console)."""
    step = mfa.second_step(user)
    if step == mfa.Step.CODE:
        if not code:
            raise PermissionDenied(
                "Enter the code from your authenticator app.", code="mfa_code_required"
            )
        return mfa.mfa_verify(user=user, code=code)
    if step == mfa.Step.ENROL:
        raise PermissionDenied(
            "Your role needs an authenticator: set one up at the console's sign-in.",
            code="mfa_enrolment_required",
        )
    return mfa.Method.NONE


def sign_in(request: HttpRequest, user: User, method: str) -> None:
    # The backend that checked the password (a user read back after the second factor has none
    # noted: the model backend then restores the session as well as any).
    backend = getattr(user, "backend", "django.contrib.auth.backends.ModelBackend")
    login(request, user, backend=backend)  # cycles the session key
    record = sessions.session_open(
        user=user,
        source_ip=current_source_ip(),
        user_agent=request.headers.get("User-Agent", ""),
        mfa=method,
    )
    request.session[SESSION_RECORD] = record.pk


def sign_out(request: HttpRequest) -> None:
    user = request.user
    if isinstance(user, User):
        services.session_logout(
            actor=actor_for_user(user), record_id=request.session.get(SESSION_RECORD)
        )
    logout(request)

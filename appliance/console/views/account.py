"""One's own account: time zone, authenticator and recovery codes, and signed-in sessions."""

from __future__ import annotations

from zoneinfo import available_timezones

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from appliance.accounts import mfa, services, sessions
from appliance.accounts.signin import SESSION_RECORD
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    not_found,
)
from appliance.core.errors import DomainError

ZONES = sorted(available_timezones())


@console_view()
def account(request: ConsoleRequest) -> HttpResponse:
    return _page(request)


def _page(
    request: ConsoleRequest, errors: FormErrors | None = None, status: int = 200
) -> HttpResponse:
    user = request.user
    context = {
        "zones": [(z, z) for z in ZONES],
        "enrolled": mfa.mfa_enrolled(user),
        "required": mfa.mfa_required(user),
        "recovery_left": mfa.recovery_codes_left(user),
        "sessions": sessions.sessions_of(user),
        "this_session": request.session.get(SESSION_RECORD),
        "errors": errors or FormErrors(),
    }
    return render(request, "console/pages/account.html", context, status=status)


@console_view()
@require_POST
def time_zone(request: ConsoleRequest) -> HttpResponse:
    try:
        services.user_set_time_zone(
            actor=request.actor, user=request.user, time_zone=request.POST.get("time_zone", "")
        )
    except DomainError as error:
        return _page(request, FormErrors(error), error.status)
    return done(request, "Time zone saved.", reverse("console:account"))


@console_view()
@require_http_methods(["GET", "POST"])
def recovery_codes(request: ConsoleRequest) -> HttpResponse:
    if request.method == "GET":
        return confirm(
            request,
            title="New recovery codes",
            consequence="Your current recovery codes will stop working and ten new ones will be "
            "shown once.",
            action="Make new recovery codes",
            cancel_url=reverse("console:account"),
        )
    try:
        codes = mfa.recovery_codes_regenerate(actor=request.actor, user=request.user)
    except DomainError as error:
        return _page(request, FormErrors(error), error.status)
    return render(
        request,
        "console/auth/recovery_codes.html",
        {"codes": codes, "continue": reverse("console:account")},
    )


@console_view()
@require_http_methods(["GET", "POST"])
def session_end(request: ConsoleRequest, session_id: int) -> HttpResponse:
    """End one of one's own sessions (another browser, a lost laptop)."""
    mine = {s.pk: s for s in sessions.sessions_of(request.user)}
    if session_id not in mine:
        return not_found(request, "session")
    if request.method == "GET":
        record = mine[session_id]
        return confirm(
            request,
            title="End a session",
            consequence=f"The session started from {record.source_ip or 'an unknown address'}"
            f" ({record.user_agent or 'unknown browser'}) will be signed out at once.",
            action="End the session",
            cancel_url=reverse("console:account"),
        )
    sessions.session_end(actor=request.actor, record_id=session_id)
    return done(request, "The session was ended.", reverse("console:account"))

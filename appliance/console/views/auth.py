"""Signing in (password, then the authenticator's code or a recovery code), setting up an
authenticator (mandatory for admins, at their first sign-in), and signing out."""

from __future__ import annotations

import time
from typing import Any

import segno
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from appliance.accounts import mfa, oidc
from appliance.accounts.middleware import ENDED
from appliance.accounts.models import TotpDevice, User
from appliance.accounts.services import password_check
from appliance.accounts.sessions import EndReason
from appliance.accounts.signin import sign_in, sign_out
from appliance.console.base import FormErrors
from appliance.console.nav import flash
from appliance.core.context import current_source_ip
from appliance.core.errors import DomainError

PENDING = "console_pending_sign_in"  # who gave a good password, waiting for their second factor
PENDING_SECONDS = 300
ENDED_MESSAGES = {
    EndReason.IDLE: "You were signed out after a period without activity.",
    EndReason.ABSOLUTE: "Your session reached its time limit; please sign in again.",
    EndReason.REVOKED: "Your session was ended; please sign in again.",
}


def safe_next(request: HttpRequest, default: str = "") -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    if target.startswith("/console/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}
    ):
        return target
    return reverse("console:dashboard")


def _pending_user(request: HttpRequest) -> User | None:
    pending = request.session.get(PENDING)
    if not pending or time.time() - pending["at"] > PENDING_SECONDS:
        return None
    return User.objects.filter(pk=pending["user"], is_active=True).first()


def _finish(request: HttpRequest, user: User, method: str) -> HttpResponse:
    target = safe_next(request, (request.session.get(PENDING) or {}).get("next", ""))
    sign_in(request, user, method)  # a new session: the pending state goes with the old one
    return HttpResponseRedirect(target)


@require_http_methods(["GET", "POST"])
def sign_in_view(request: HttpRequest) -> HttpResponse:
    if isinstance(request.user, User):
        return HttpResponseRedirect(safe_next(request))
    context: dict[str, Any] = {
        "next": request.GET.get("next", ""),
        "ended": ENDED_MESSAGES.get(request.session.pop(ENDED, ""), ""),
        "sso": oidc.enabled(),
        "sso_label": settings.APPLIANCE_OIDC_LABEL,
    }
    if request.method == "GET":
        return render(request, "console/auth/sign_in.html", context)
    username = request.POST.get("username", "").strip()
    context.update(username=username, next=request.POST.get("next", ""))
    try:
        user = password_check(
            username=username,
            password=request.POST.get("password", ""),
            source_ip=current_source_ip(),
        )
    except DomainError as error:
        return render(
            request,
            "console/auth/sign_in.html",
            {**context, "errors": FormErrors(error)},
            status=error.status,
        )
    return after_first_factor(request, user, context["next"])


def after_first_factor(request: HttpRequest, user: User, next_url: str) -> HttpResponse:
    """A person proved who they are once (password, or the identity provider without a second
    factor): ask for their authenticator's code, make an admin set one up, or sign them in."""
    request.session.cycle_key()
    request.session[PENDING] = {"user": user.pk, "at": time.time(), "next": next_url}
    step = mfa.second_step(user)
    if step == mfa.Step.CODE:
        return HttpResponseRedirect(reverse("console:sign-in-code"))
    if step == mfa.Step.ENROL:
        return HttpResponseRedirect(reverse("console:mfa-enrol"))
    return _finish(request, user, mfa.Method.NONE)


@require_http_methods(["GET", "POST"])
def code_view(request: HttpRequest) -> HttpResponse:
    user = _pending_user(request)
    if user is None:
        return HttpResponseRedirect(reverse("console:sign-in"))
    if request.method == "GET":
        return render(request, "console/auth/code.html", {})
    try:
        method = mfa.mfa_verify(user=user, code=request.POST.get("code", ""))
    except DomainError as error:
        errors = FormErrors()
        errors.add("code", error.detail)
        return render(request, "console/auth/code.html", {"errors": errors}, status=error.status)
    return _finish(request, user, method)


@require_http_methods(["GET", "POST"])
def enrol_view(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator: at a first sign-in (admins must), or later from the account
    page. The secret is shown as a QR code and as text, for apps that cannot scan."""
    signed_in = isinstance(request.user, User)
    user = request.user if signed_in else _pending_user(request)
    if not isinstance(user, User):
        return HttpResponseRedirect(reverse("console:sign-in"))
    if mfa.mfa_enrolled(user):
        return HttpResponseRedirect(reverse("console:account"))
    errors = FormErrors()
    if request.method == "POST":
        try:
            codes = mfa.totp_confirm(user=user, code=request.POST.get("code", ""))
        except DomainError as error:
            errors = FormErrors(error)
        else:
            if not signed_in:
                target = safe_next(request, (request.session.get(PENDING) or {}).get("next", ""))
                sign_in(request, user, mfa.Method.TOTP)
            else:
                target = reverse("console:account")
            return render(
                request, "console/auth/recovery_codes.html", {"codes": codes, "continue": target}
            )
    device = TotpDevice.objects.filter(user=user, confirmed_at__isnull=True).first()
    secret = mfa.device_secret(device) if device is not None else mfa.totp_begin(user=user)
    uri = mfa.provisioning_uri(user=user, secret=secret)
    context = {
        "secret": " ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        "qr": segno.make(uri, error="m").svg_data_uri(scale=4, border=2),
        "required": mfa.mfa_required(user),
        "errors": errors,
        "signed_in": signed_in,
    }
    return render(request, "console/auth/enrol.html", context, status=422 if errors else 200)


@require_POST
def sign_out_view(request: HttpRequest) -> HttpResponse:
    if isinstance(request.user, User):
        sign_out(request)
        flash(request, "You have signed out.")
    return HttpResponseRedirect(reverse("console:sign-in"))

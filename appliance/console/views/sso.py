"""Single sign-on through the organisation's identity provider (OpenID Connect): the console
sends the browser there and takes it back. A provider that asked for a second factor (its "amr")
is enough; otherwise the person gives their authenticator's code here, as after a password."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET

from appliance.accounts import oidc, sso
from appliance.accounts.signin import sign_in
from appliance.console.base import FormErrors, not_found
from appliance.console.views.auth import after_first_factor, safe_next
from appliance.core.errors import DomainError

PENDING_SSO = "console_sso"
IDP = "idp"  # the second factor was given at the identity provider


def _callback_url(request: HttpRequest) -> str:
    return request.build_absolute_uri(reverse("console:sso-callback"))


@require_GET
def sso_start(request: HttpRequest) -> HttpResponse:
    if not oidc.enabled():
        return not_found(request, "single sign-on")
    try:
        url, pending = oidc.begin(_callback_url(request))
    except DomainError as error:
        return _failed(request, error)
    request.session[PENDING_SSO] = {**pending, "next": request.GET.get("next", "")}
    return HttpResponseRedirect(url)


@require_GET
def sso_callback(request: HttpRequest) -> HttpResponse:
    if not oidc.enabled():
        return not_found(request, "single sign-on")
    pending = request.session.pop(PENDING_SSO, None)
    try:
        claims = oidc.finish(request.GET.dict(), pending, _callback_url(request))
        user = sso.sso_user(claims=claims)
    except DomainError as error:
        return _failed(request, error)
    next_url = (pending or {}).get("next", "")
    if sso.mfa_at_provider(claims):
        target = safe_next(request, next_url)
        sign_in(request, user, IDP)
        return HttpResponseRedirect(target)
    return after_first_factor(request, user, next_url)


def _failed(request: HttpRequest, error: DomainError) -> HttpResponse:
    context = {"errors": FormErrors(error), "sso": True, "next": ""}
    return render(request, "console/auth/sign_in.html", context, status=error.status)


urlpatterns = [
    path("sign-in/sso", sso_start, name="sso-start"),
    path("sign-in/sso/callback", sso_callback, name="sso-callback"),
]

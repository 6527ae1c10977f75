"""One's own personal API tokens, for scripts: list, create (the secret shown once), revoke.
The same services as ``/api/v1/tokens``; an admin's view of everyone's tokens stays in the API."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from appliance.accounts import selectors, services
from appliance.accounts.models import ApiToken
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    refused,
)
from appliance.core.errors import DomainError

TEMPLATE = "console/pages/tokens.html"


def _own(request: ConsoleRequest) -> QuerySet[ApiToken]:
    """One's own tokens only (the API shows an admin everyone's)."""
    return selectors.token_visible(actor=request.actor).filter(user=request.user)


def _context(request: ConsoleRequest) -> dict[str, object]:
    return {
        "tokens": _own(request).order_by("-created_at", "-pk"),
        "max_days": services.MAX_TOKEN_DAYS,
        "values": {"expires_in_days": "90"},
        "errors": FormErrors(),
    }


@console_view()
@require_http_methods(["GET", "POST"])
def tokens_page(request: ConsoleRequest) -> HttpResponse:
    """A script signs in with a token rather than a password and a code; each token can be
    revoked alone, and expires."""
    context = _context(request)
    if request.method == "GET":
        return render(request, TEMPLATE, context)
    values = {
        "name": request.POST.get("name", ""),
        "expires_in_days": request.POST.get("expires_in_days", "").strip(),
    }
    context["values"] = values
    days: int | None = None
    if values["expires_in_days"]:
        try:
            days = int(values["expires_in_days"])
        except ValueError:
            errors = FormErrors()
            errors.add("expires_in_days", "A whole number of days, or empty for no expiry.")
            return invalid(request, TEMPLATE, context, errors)
    try:
        token, secret = services.token_create(
            actor=request.actor, name=values["name"], expires_in_days=days
        )
    except DomainError as error:
        return refused(request, TEMPLATE, context, error)
    return render(
        request, "console/pages/token_created.html", {"token": token, "secret": secret}, status=201
    )


@console_view()
@require_http_methods(["GET", "POST"])
def token_revoke(request: ConsoleRequest, token_id: int) -> HttpResponse:
    """Revoke one of one's own tokens: the script using it fails from its next request."""
    token = _own(request).filter(pk=token_id).first()
    if token is None or token.revoked_at is not None:
        return not_found(request, "active token of yours")
    back = reverse("console:tokens")
    if request.method == "GET":
        return confirm(
            request,
            title=f"Revoke the token {token.name}",
            consequence=f"Scripts using the token {token.prefix}… stop working at their next "
            "request. This cannot be undone.",
            action="Revoke the token",
            cancel_url=back,
        )
    services.token_revoke(actor=request.actor, token=token)
    return done(request, f"The token {token.name} was revoked.", back)


urlpatterns = [
    path("account/tokens", tokens_page, name="tokens"),
    path("account/tokens/<int:token_id>/revoke", token_revoke, name="token-revoke"),
]

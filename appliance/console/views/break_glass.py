"""Break-glass (emergency) access in the console: an admin opens it for a person with a reason
and their own authenticator code; everyone who may see users sees every grant; an admin ends one
early. The service holds the rules and writes the high-severity events."""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from appliance.accounts import break_glass
from appliance.accounts.permissions import Capability, allows
from appliance.accounts.selectors import user_visible
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    paginate,
)
from appliance.console.nav import flash
from appliance.core.errors import DomainError

MINUTES = [
    (m, f"{m} minutes" if m < 60 else f"{m // 60} hour{'s' if m > 60 else ''}")
    for m in (15, 30, 60, 120, 240, 480)
]
FORM = "console/pages/break_glass_new.html"


@console_view(Capability.USERS_VIEW)
def grants_page(request: ConsoleRequest) -> HttpResponse:
    """Every emergency access, open ones first in time order, for the review that must follow."""
    page_obj = paginate(request, break_glass.break_glass_list(actor=request.actor))
    return render(
        request,
        "console/pages/break_glass.html",
        {
            "page_obj": page_obj,
            "active_ids": {g.pk for g in page_obj if break_glass.is_open(g)},
            "may_manage": allows(request.actor, Capability.USERS_MANAGE),
        },
    )


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def grant_new(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """Open emergency access for one person: the form says what it does before it is sent."""
    user = user_visible(actor=request.actor).filter(pk=user_id).first()
    if user is None:
        return not_found(request, "user")
    context = {"person": user, "minutes_choices": MINUTES, "values": {"minutes": 60}}
    if request.method == "GET":
        return render(request, FORM, {**context, "errors": FormErrors()})
    values = {"reason": request.POST.get("reason", ""), "minutes": request.POST.get("minutes", "")}
    context["values"] = values
    try:
        minutes = int(values["minutes"])
    except ValueError:
        errors = FormErrors()
        errors.add("minutes", "Pick how long.")
        return invalid(request, FORM, context, errors)
    try:
        grant = break_glass.break_glass_grant(
            actor=request.actor,
            user=user,
            reason=values["reason"],
            minutes=minutes,
            code=request.POST.get("code", ""),
        )
    except DomainError as error:
        errors = FormErrors(error)
        if error.code == "invalid_mfa_code":
            errors.add("code", error.detail)
        return render(request, FORM, {**context, "errors": errors}, status=error.status)
    flash(
        request, f"Emergency access for {user.username} is open until {grant.expires_at:%H:%M} UTC."
    )
    return HttpResponseRedirect(reverse("console:break-glass"))


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def grant_end(request: ConsoleRequest, grant_id: int) -> HttpResponse:
    """End emergency access before its time."""
    grant = break_glass.break_glass_list(actor=request.actor).filter(pk=grant_id).first()
    if grant is None or not break_glass.is_open(grant):
        return not_found(request, "open emergency access")
    back = reverse("console:break-glass")
    if request.method == "GET":
        return confirm(
            request,
            title=f"End the emergency access of {grant.user.username}",
            consequence=f"{grant.user.username} acts with their own role "
            f"({grant.user.get_role_display()}) again from now on.",
            action="End the emergency access",
            cancel_url=back,
        )
    try:
        break_glass.break_glass_end(actor=request.actor, grant_id=grant.pk)
    except DomainError as error:  # it ended meanwhile (expired, or another admin)
        return done(request, error.detail, back)
    return done(request, f"The emergency access of {grant.user.username} has ended.", back)


urlpatterns = [
    path("break-glass", grants_page, name="break-glass"),
    path("users/<int:user_id>/break-glass", grant_new, name="break-glass-new"),
    path("break-glass/<int:grant_id>/end", grant_end, name="break-glass-end"),
]

"""Retention and legal holds: how long each category of data is kept (never below its floor) and
which data the purge must keep regardless. Auditors read; admins (PRIVACY_MANAGE) change them
through the same services as the compliance API."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from appliance.access.selectors import application_list
from appliance.accounts.permissions import Capability, allows
from appliance.audit import retention
from appliance.audit.models import LegalHold
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    paginate,
    query_without_page,
    refused,
)
from appliance.console.views.report_helpers import parse_id, parse_moment
from appliance.core.errors import DomainError

PAGE = "console/pages/audit_retention.html"
HOLD_FIELDS = ("name", "reason", "application_id", "starts_at", "ends_at")


def _context(
    request: ConsoleRequest, typed: dict[str, str] | None = None, errors: FormErrors | None = None
) -> dict[str, Any]:
    page_obj = paginate(
        request, LegalHold.objects.select_related("application").order_by("-placed_at", "-id")
    )
    manage = allows(request.actor, Capability.PRIVACY_MANAGE)
    applications = application_list(actor=request.actor) if manage else []
    return {
        "policies": retention.retention_list(),
        "page_obj": page_obj,
        "query": query_without_page(request),
        "can_manage": manage,
        "applications": [("", "All applications"), *((a.pk, a.name) for a in applications)],
        "typed": typed or {},
        "errors": errors or FormErrors(),
    }


@console_view(Capability.AUDIT_VIEW)
@require_GET
def retention_page(request: ConsoleRequest) -> HttpResponse:
    """Each category's retention and every legal hold, active ones marked."""
    return render(request, PAGE, _context(request))


@console_view(Capability.PRIVACY_MANAGE)
@require_POST
def retention_set(request: ConsoleRequest, category: str) -> HttpResponse:
    """Change one category's retention; below the floor the service refuses with the floor."""
    typed = {"days": request.POST.get("days", "").strip(), "category": category}
    if not typed["days"].isdigit() or len(typed["days"]) > 9:
        errors = FormErrors()
        errors.add("days", "Give a whole number of days.")
        return invalid(request, PAGE, _context(request, typed), errors)
    try:
        retention.retention_set(actor=request.actor, category=category, days=int(typed["days"]))
    except DomainError as error:
        return refused(request, PAGE, _context(request, typed), error)
    return _back(request, f"{category} is now kept {typed['days']} days.")


@console_view(Capability.PRIVACY_MANAGE)
@require_POST
def hold_place(request: ConsoleRequest) -> HttpResponse:
    """Place a legal hold: the purge keeps the data in its scope until it is released."""
    typed = {name: request.POST.get(name, "").strip() for name in HOLD_FIELDS}
    errors = FormErrors()
    starts_at = parse_moment(typed["starts_at"], "starts_at", errors)
    ends_at = parse_moment(typed["ends_at"], "ends_at", errors)
    application = None
    application_id = parse_id(typed["application_id"], "application_id", errors)
    if application_id is not None:
        application = application_list(actor=request.actor).filter(pk=application_id).first()
        if application is None:
            errors.add("application_id", "No such application.")
    for name, limit in (("name", 100), ("reason", 2000)):
        if len(typed[name]) > limit:
            errors.add(name, f"At most {limit} characters.")
    if errors:
        return invalid(request, PAGE, _context(request, typed), errors)
    try:
        hold = retention.legal_hold_place(
            actor=request.actor,
            name=typed["name"],
            reason=typed["reason"],
            application=application,
            starts_at=starts_at,
            ends_at=ends_at,
        )
    except DomainError as error:
        return refused(request, PAGE, _context(request, typed), error)
    return _back(request, f"Legal hold “{hold.name}” placed.")


@console_view(Capability.PRIVACY_MANAGE)
@require_http_methods(["GET", "POST"])
def hold_release(request: ConsoleRequest, hold_id: int) -> HttpResponse:
    """Release a hold after a confirmation: the purge may then remove what it kept."""
    hold = LegalHold.objects.select_related("application").filter(pk=hold_id).first()
    if hold is None:
        return not_found(request, "legal hold")
    if request.method == "GET":
        scope = hold.application.name if hold.application else "every application"
        return confirm(
            request,
            title=f"Release legal hold “{hold.name}”",
            consequence=f"The hold on the data of {scope} will end now; the daily purge may then "
            "delete that data once it is past its retention. This cannot be undone (a new hold "
            "can be placed, but purged data is gone).",
            action="Release the hold",
            cancel_url=reverse("console:retention"),
        )
    try:
        retention.legal_hold_release(actor=request.actor, hold=hold)
    except DomainError as error:
        return refused(request, PAGE, _context(request), error)
    return _back(request, f"Legal hold “{hold.name}” released.")


def _back(request: ConsoleRequest, message: str) -> HttpResponse:
    """Every change here returns to the retention page (303: a reload does not post again)."""
    return done(request, message, reverse("console:retention"), status=303)


urlpatterns = [
    path("audit/retention", retention_page, name="retention"),
    path("audit/retention/<str:category>", retention_set, name="retention-set"),
    path("audit/holds", hold_place, name="legal-hold-place"),
    path("audit/holds/<int:hold_id>/release", hold_release, name="legal-hold-release"),
]

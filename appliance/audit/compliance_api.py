"""Compliance API (``/api/v1/compliance``): retention per data category, legal holds, breach
records (GDPR Art. 33) and the access report an investigation needs."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from appliance.access.models import Application
from appliance.accounts.permissions import Capability, require
from appliance.api.base import actor_of, error_responses, get_or_404
from appliance.audit import breaches, retention
from appliance.audit.models import BreachRecord, LegalHold
from appliance.audit.schemas import (
    AccessReportFilter,
    AccessRowOut,
    BreachIn,
    BreachOut,
    BreachReportIn,
    LegalHoldIn,
    LegalHoldOut,
    RetentionIn,
    RetentionOut,
)

router = Router(tags=["compliance"])
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


@router.get("/retention", response={200: list[RetentionOut], **error_responses(401, 403)})
def list_policies(request: HttpRequest) -> list[retention.Retention]:
    """Each data category's retention in days, and the floor no policy may go below."""
    require(actor_of(request), Capability.AUDIT_VIEW)
    return retention.retention_list()


@router.put("/retention/{category}", response={200: RetentionOut, **WRITE_ERRORS})
def set_policy(request: HttpRequest, category: str, body: RetentionIn) -> retention.Retention:
    return retention.retention_set(actor=actor_of(request), category=category, days=body.days)


@router.get("/holds", response={200: list[LegalHoldOut], **error_responses(401, 403)})
def list_holds(request: HttpRequest) -> Any:
    require(actor_of(request), Capability.AUDIT_VIEW)
    return LegalHold.objects.all()


@router.post("/holds", response={201: LegalHoldOut, **WRITE_ERRORS})
def place_hold(request: HttpRequest, body: LegalHoldIn) -> Any:
    actor = actor_of(request)
    require(actor, Capability.PRIVACY_MANAGE)
    application = None
    if body.application_id is not None:
        application = get_or_404(Application.objects.all(), "application", pk=body.application_id)
    hold = retention.legal_hold_place(
        actor=actor,
        name=body.name,
        reason=body.reason,
        application=application,
        starts_at=body.starts_at,
        ends_at=body.ends_at,
    )
    return Status(201, hold)


@router.post("/holds/{hold_id}/release", response={200: LegalHoldOut, **WRITE_ERRORS})
def release_hold(request: HttpRequest, hold_id: int) -> LegalHold:
    actor = actor_of(request)
    require(actor, Capability.PRIVACY_MANAGE)
    hold = get_or_404(LegalHold.objects.all(), "legal hold", pk=hold_id)
    return retention.legal_hold_release(actor=actor, hold=hold)


@router.get("/breaches", response={200: list[BreachOut], **error_responses(401, 403)})
def list_breaches(request: HttpRequest) -> Any:
    require(actor_of(request), Capability.AUDIT_VIEW)
    return BreachRecord.objects.all()


@router.post("/breaches", response={201: BreachOut, **WRITE_ERRORS})
def record_breach(request: HttpRequest, body: BreachIn) -> Any:
    """Record a breach; its deadline is 72 hours after ``aware_at`` (GDPR Art. 33(1))."""
    return Status(201, breaches.breach_record(actor=actor_of(request), **body.dict()))


@router.post("/breaches/{breach_id}/report", response={200: BreachOut, **WRITE_ERRORS})
def report_breach(request: HttpRequest, breach_id: int, body: BreachReportIn) -> BreachRecord:
    actor = actor_of(request)
    require(actor, Capability.PRIVACY_MANAGE)
    breach = get_or_404(BreachRecord.objects.all(), "breach", pk=breach_id)
    return breaches.breach_reported(actor=actor, breach=breach, **body.dict())


@router.get("/access-report", response={200: list[AccessRowOut], **error_responses(401, 403, 422)})
def access_report(request: HttpRequest, filters: Query[AccessReportFilter]) -> Any:
    """Who did what to which object in a time window, from the audit log (an investigation's
    first question)."""
    return breaches.access_report(actor=actor_of(request), **filters.dict())

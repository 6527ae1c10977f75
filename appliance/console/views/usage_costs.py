"""The cost and savings report for a date range (this month by default, in the person's zone):
per application, task class, route, model and deployment, the cost on the appliance, the same
tokens at a hosted API's list price, and the saving; with a CSV download. It calls the report the
API serves, which shows an app owner their own applications only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from appliance.access.selectors import application_list
from appliance.accounts.permissions import Capability
from appliance.console.base import ConsoleRequest, FormErrors, console_view, refused
from appliance.console.views.report_helpers import csv_response, day_start, parse_day, parse_id
from appliance.core.actors import Actor
from appliance.core.errors import DomainError, ValidationFailed
from appliance.routing.models import ReferencePrice
from appliance.routing.reports import CostReport, cost_report
from appliance.routing.selectors import reference_price_list

PAGE = "console/pages/cost.html"
CSV_HEADER = (
    "application",
    "task_class",
    "route",
    "model",
    "adapter",
    "deployment",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost",
    "reference_cost",
    "saving",
    "currency",
    "reference",
)


@dataclass
class CostQuery:
    """The report's filters as typed and as the report takes them."""

    typed: dict[str, str]
    since: datetime | None = None  # the first day's start
    until: datetime | None = None  # the day after the last one
    reference: ReferencePrice | None = None
    application_id: int | None = None
    errors: FormErrors = field(default_factory=FormErrors)


def cost_query(actor: Actor, data: Any) -> CostQuery:
    """Days in the person's zone, both included; a reference price they may see."""
    names = ("since", "until", "reference_id", "application_id")
    typed = {name: str(data.get(name, "")).strip() for name in names}
    today = timezone.localdate()
    typed["since"] = typed["since"] or today.replace(day=1).isoformat()
    typed["until"] = typed["until"] or today.isoformat()
    query = CostQuery(typed)
    errors = query.errors
    first = parse_day(typed["since"], "since", errors)
    last = parse_day(typed["until"], "until", errors)
    if first and last:
        query.since, query.until = day_start(first), day_start(last + timedelta(days=1))
    query.application_id = parse_id(typed["application_id"], "application_id", errors)
    reference_id = parse_id(typed["reference_id"], "reference_id", errors)
    if reference_id is not None:
        query.reference = reference_price_list(actor=actor).filter(pk=reference_id).first()
        if query.reference is None:
            errors.add("reference_id", "No such reference price.")
    return query


def _report(request: ConsoleRequest, query: CostQuery) -> CostReport:
    if query.since is None or query.until is None:  # refused by cost_query already
        raise ValidationFailed("Give both days.", fields={"since": ["Required."]})
    return cost_report(
        actor=request.actor,
        since=query.since,
        until=query.until,
        reference=query.reference,
        application_id=query.application_id,
    )


def _context(request: ConsoleRequest, query: CostQuery) -> dict[str, Any]:
    actor = request.actor
    return {
        "typed": query.typed,
        "errors": query.errors,
        "references": [
            ("", "The default"),
            *((p.pk, p.name) for p in reference_price_list(actor=actor)),
        ],
        "applications": [
            ("", "All applications"),
            *((a.pk, a.name) for a in application_list(actor=actor)),
        ],
    }


@console_view(Capability.COSTS_VIEW)
@require_GET
def cost_page(request: ConsoleRequest) -> HttpResponse:
    """What the range cost on the appliance and what a hosted API would have charged."""
    query = cost_query(request.actor, request.GET)
    context = _context(request, query)
    if query.errors:
        return render(request, PAGE, context, status=422)
    try:
        report = _report(request, query)
    except DomainError as error:
        return refused(request, PAGE, context, error)
    context["report"] = report
    context["last_day"] = timezone.localtime(report.until).date() - timedelta(days=1)
    context["csv_query"] = request.GET.urlencode()
    return render(request, PAGE, context)


@console_view(Capability.COSTS_VIEW)
@require_GET
def cost_csv(request: ConsoleRequest) -> HttpResponse:
    """The report's rows, for a spreadsheet (the totals are the sums of the columns)."""
    query = cost_query(request.actor, request.GET)
    if query.errors:
        return render(request, PAGE, _context(request, query), status=422)
    try:
        report = _report(request, query)
    except DomainError as error:
        return refused(request, PAGE, _context(request, query), error)
    lines = (
        [
            row.application,
            row.task_class,
            row.route,
            row.model,
            row.adapter,
            row.deployment,
            row.requests,
            row.prompt_tokens,
            row.completion_tokens,
            row.cost,
            row.reference_cost,
            row.saving,
            report.currency,
            report.reference,
        ]
        for row in report.rows
    )
    last_day = report.until.date() - timedelta(days=1)
    name = f"cost-{report.since.date().isoformat()}-to-{last_day.isoformat()}.csv"
    return csv_response(name, CSV_HEADER, lines)


urlpatterns = [
    path("usage/cost", cost_page, name="cost"),
    path("usage/cost.csv", cost_csv, name="cost-csv"),
]

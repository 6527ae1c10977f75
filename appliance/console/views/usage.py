"""Usage: what applications used per UTC hour or day (from the rollups, never the raw records),
with totals and a CSV download, and the requests one by one (status, latency, tokens, route; no
prompt text is stored). App owners see their own applications' rows only: the selectors decide."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Q, QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_GET

from appliance.access.selectors import application_list
from appliance.accounts.permissions import Capability
from appliance.console.base import PAGE_SIZE, ConsoleRequest, FormErrors, console_view, paginate
from appliance.console.views import usage_costs
from appliance.console.views.report_helpers import (
    csv_response,
    day_start,
    parse_day,
    parse_id,
    parse_moment,
)
from appliance.core.actors import Actor
from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRecord, UsageRollup
from appliance.gateway.selectors import usage_record_list, usage_rollup_list

DEFAULT_DAYS = 30
TEXT_FILTERS = {"model": 100, "route": 63, "task_class": 40}  # the API's RecordFilter limits
GROUP = ("start", "application__name", "model", "task_class")
SUMS = {
    "requests": Sum("requests"),
    "errors": Sum("errors"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "latency_ms_sum": Sum("latency_ms_sum"),
}
CSV_HEADER = (
    "period",
    "start_utc",
    "application",
    "model",
    "task_class",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "latency_ms_avg",
)


def application_choices(actor: Actor) -> list[tuple[Any, str]]:
    """The applications this person may filter by (an owner's own only)."""
    return [("", "All applications"), *((a.pk, a.name) for a in application_list(actor=actor))]


@dataclass
class Filters:
    """Filters as typed (to show again) and as the selectors take them."""

    typed: dict[str, str]
    values: dict[str, Any] = field(default_factory=dict)
    errors: FormErrors = field(default_factory=FormErrors)


def _text(filters: Filters, names: tuple[str, ...]) -> None:
    for name in names:
        value = filters.typed[name]
        if len(value) > TEXT_FILTERS[name]:
            filters.errors.add(name, f"At most {TEXT_FILTERS[name]} characters.")
        filters.values[name] = value or None


def rollup_filters(data: Any) -> Filters:
    """Period, UTC days (``until`` included) and application; from 30 days ago by default."""
    names = ("period", "since", "until", "application_id", "model", "task_class")
    typed = {name: str(data.get(name, "")).strip() for name in names}
    if "since" not in data:
        typed["since"] = (
            timezone.now().astimezone(UTC).date() - timedelta(DEFAULT_DAYS)
        ).isoformat()
    typed["period"] = typed["period"] or UsagePeriod.DAY
    filters = Filters(typed)
    errors = filters.errors
    if typed["period"] not in UsagePeriod.values:
        errors.add("period", "Choose hour or day.")
    since = parse_day(typed["since"], "since", errors)
    until = parse_day(typed["until"], "until", errors)
    if since and until and until < since:
        errors.add("until", "Must not be before the first day.")
    filters.values = {
        "period": typed["period"],
        "since": day_start(since, UTC) if since else None,
        "until": day_start(until + timedelta(days=1), UTC) if until else None,
        "application_id": parse_id(typed["application_id"], "application_id", errors),
    }
    _text(filters, ("model", "task_class"))
    return filters


def _grouped(rollups: QuerySet[UsageRollup]) -> QuerySet[Any]:
    """Per bucket, application, model and task class (adapters, deployments and routes summed),
    newest bucket first."""
    return (
        rollups.values(*GROUP)
        .annotate(**SUMS)
        .order_by("-start", "application__name", "model", "task_class")
    )


def _row(group: dict[str, Any]) -> dict[str, Any]:
    """A group (or the totals, which have no start) with its sums, total tokens and average
    latency; an empty selection sums to zero."""
    sums = {name: group[name] or 0 for name in SUMS}
    start = group.get("start")
    return {
        **group,
        **sums,
        "day": start.astimezone(UTC).date() if start else None,
        "total_tokens": sums["prompt_tokens"] + sums["completion_tokens"],
        "latency_ms_avg": (
            round(sums["latency_ms_sum"] / sums["requests"], 1) if sums["requests"] else None
        ),
    }


def _rollups(request: ConsoleRequest, filters: Filters) -> QuerySet[UsageRollup]:
    return usage_rollup_list(actor=request.actor, **filters.values)


@console_view(Capability.COSTS_VIEW)
@require_GET
def usage_page(request: ConsoleRequest) -> HttpResponse:
    """Requests, errors, tokens and latency per day or hour, application, model and task class,
    with the totals of everything the filters select."""
    filters = rollup_filters(request.GET)
    context: dict[str, Any] = {
        "typed": filters.typed,
        "errors": filters.errors,
        "periods": UsagePeriod.choices,
        "applications": application_choices(request.actor),
        "query": _query(request, "page"),
    }
    if filters.errors:
        return render(request, "console/pages/usage.html", context, status=422)
    rollups = _rollups(request, filters)
    page_obj = paginate(request, _grouped(rollups))
    context.update(
        shown=True,
        page_obj=page_obj,
        rows=[_row(group) for group in page_obj.object_list],
        totals=_row(rollups.aggregate(**SUMS)),
    )
    return render(request, "console/pages/usage.html", context)


@console_view(Capability.COSTS_VIEW)
@require_GET
def usage_csv(request: ConsoleRequest) -> HttpResponse:
    """Every row the usage page's filters select, for a spreadsheet."""
    filters = rollup_filters(request.GET)
    if filters.errors:
        context = {
            "typed": filters.typed,
            "errors": filters.errors,
            "periods": UsagePeriod.choices,
            "applications": application_choices(request.actor),
        }
        return render(request, "console/pages/usage.html", context, status=422)
    rows = (_row(group) for group in _grouped(_rollups(request, filters)).iterator())
    lines = (
        [
            filters.values["period"],
            r["start"].astimezone(UTC),
            r["application__name"],
            *(r[name] for name in CSV_HEADER[3:]),
        ]
        for r in rows
    )
    return csv_response(f"usage-{filters.values['period']}.csv", CSV_HEADER, lines)


# Records: keyset pages on (time, id), newest first, as the API's cursor reads them.


@dataclass
class RecordPage:
    records: list[UsageRecord]
    older: str | None
    newer: str | None


def _key(record: UsageRecord) -> str:
    micros = (record.time - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return f"{micros}_{record.pk}"


def _unkey(value: str | None) -> tuple[datetime, int] | None:
    try:
        micros, pk = (value or "").split("_")
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(micros)), int(pk)
    except (ValueError, OverflowError):
        return None  # not typed by people: a bad cursor shows the newest page


def _before(key: tuple[datetime, int]) -> Q:
    return Q(time__lt=key[0]) | Q(time=key[0], id__lt=key[1])


def _after(key: tuple[datetime, int]) -> Q:
    return Q(time__gt=key[0]) | Q(time=key[0], id__gt=key[1])


def record_page(
    records: QuerySet[UsageRecord], request: HttpRequest, size: int = PAGE_SIZE
) -> RecordPage:
    """``?before=`` (older) or ``?after=`` (newer): ``size + 1`` rows by the (time) index."""
    before, after = _unkey(request.GET.get("before")), _unkey(request.GET.get("after"))
    if after is not None:
        chunk = list(records.filter(_after(after)).order_by("time", "id")[: size + 1])
        rows = list(reversed(chunk[:size]))
        if rows:
            older = _key(rows[-1]) if records.filter(_before(_pair(rows[-1]))).exists() else None
            return RecordPage(rows, older, _key(rows[0]) if len(chunk) > size else None)
        before = None
    chunk = list((records if before is None else records.filter(_before(before)))[: size + 1])
    rows = chunk[:size]
    older = _key(rows[-1]) if len(chunk) > size else None
    newer = None
    if before is not None and rows and records.filter(_after(_pair(rows[0]))).exists():
        newer = _key(rows[0])
    return RecordPage(rows, older, newer)


def _pair(record: UsageRecord) -> tuple[datetime, int]:
    return record.time, record.pk


def record_filters(data: Any) -> Filters:
    names = ("since", "until", "application_id", "status", *TEXT_FILTERS)
    filters = Filters({name: str(data.get(name, "")).strip() for name in names})
    typed, errors = filters.typed, filters.errors
    status = None
    if typed["status"]:
        if typed["status"].isdigit() and 100 <= int(typed["status"]) <= 599:
            status = int(typed["status"])
        else:
            errors.add("status", "An HTTP status, 100 to 599.")
    filters.values = {
        "since": parse_moment(typed["since"], "since", errors),
        "until": parse_moment(typed["until"], "until", errors),
        "application_id": parse_id(typed["application_id"], "application_id", errors),
        "status": status,
    }
    _text(filters, tuple(TEXT_FILTERS))
    return filters


def _query(request: HttpRequest, *drop: str) -> str:
    params = request.GET.copy()
    for name in drop:
        params.pop(name, None)
    return params.urlencode()


@console_view(Capability.COSTS_VIEW)
@require_GET
def records_page(request: ConsoleRequest) -> HttpResponse:
    """Single requests, newest first: who, which model or route, status, tokens, timings."""
    filters = record_filters(request.GET)
    context: dict[str, Any] = {
        "typed": filters.typed,
        "errors": filters.errors,
        "applications": application_choices(request.actor),
        "query": _query(request, "before", "after"),
        "filtered": any(filters.typed.values()),
    }
    if filters.errors:
        return render(request, "console/pages/usage_records.html", context, status=422)
    records = usage_record_list(actor=request.actor, **filters.values)
    context["page"] = record_page(records, request)
    return render(request, "console/pages/usage_records.html", context)


urlpatterns = [
    path("usage", usage_page, name="usage"),
    path("usage.csv", usage_csv, name="usage-csv"),
    path("usage/records", records_page, name="usage-records"),
    *usage_costs.urlpatterns,
]

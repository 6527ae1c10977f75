"""What the audit and usage pages share: filters typed into them (times, dates and ids parsed
defensively: a bad value is a field error next to its field, never a crash), the audit filters the
API takes, and CSV downloads that a spreadsheet cannot be tricked into running."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from django.http import HttpResponse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from appliance.audit.choices import Outcome
from appliance.console.base import FormErrors
from appliance.core.actors import ActorKind

# The API's AuditFilter limits, so the console refuses what the API refuses.
TEXT_FILTERS = {"action": 64, "actor_id": 64, "object_type": 32, "object_id": 64}
AUDIT_FILTERS = ("since", "until", "actor_kind", *TEXT_FILTERS, "outcome")


def parse_moment(value: str, name: str, errors: FormErrors) -> datetime | None:
    """A time typed in a form (``2026-11-23T10:30`` or a date), in the person's zone unless it
    names one; anything else is a field error."""
    text = value.strip()
    if not text:
        return None
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime(day.year, day.month, day.day) if day else None
    except ValueError:
        moment = None
    if moment is None:
        errors.add(name, "Give a date and time, e.g. 2026-11-23 10:30.")
        return None
    return timezone.make_aware(moment) if timezone.is_naive(moment) else moment


def actor_kind_choices() -> list[tuple[str, str]]:
    return [("", "Any"), *((kind, kind) for kind in ActorKind.ALL)]


def outcome_choices() -> list[tuple[str, str]]:
    return [("", "Any"), *Outcome.choices]


@dataclass
class AuditQuery:
    """The browser's (and an export's) filters: as typed, and as the selector takes them."""

    typed: dict[str, str]
    filters: dict[str, Any] = field(default_factory=dict)
    errors: FormErrors = field(default_factory=FormErrors)


def audit_query(data: Any) -> AuditQuery:
    """Parse the filters the API's AuditFilter takes; bad values become field errors."""
    query = AuditQuery(typed={name: str(data.get(name, "")).strip() for name in AUDIT_FILTERS})
    typed, errors = query.typed, query.errors
    for name in ("since", "until"):
        query.filters[name] = parse_moment(typed[name], name, errors)
    for name, limit in TEXT_FILTERS.items():
        if len(typed[name]) > limit:
            errors.add(name, f"At most {limit} characters.")
        query.filters[name] = typed[name] or None
    if typed["actor_kind"] and typed["actor_kind"] not in ActorKind.ALL:
        errors.add("actor_kind", "Choose a kind from the list.")
    if typed["outcome"] and typed["outcome"] not in Outcome.values:
        errors.add("outcome", "Choose an outcome from the list.")
    query.filters["actor_kind"] = typed["actor_kind"] or None
    query.filters["outcome"] = typed["outcome"] or None
    return query


def parse_day(value: str, name: str, errors: FormErrors) -> date | None:
    """A date typed in a form (``2026-11-23``); anything else is a field error."""
    text = value.strip()
    if not text:
        return None
    try:
        day = parse_date(text)
    except ValueError:
        day = None
    if day is None:
        errors.add(name, "Give a date, e.g. 2026-11-23.")
    return day


def day_start(day: date, zone: Any = None) -> datetime:
    """Midnight at the start of ``day`` in ``zone`` (default: the person's)."""
    return timezone.make_aware(datetime.combine(day, time.min), zone)


def parse_id(value: str, name: str, errors: FormErrors) -> int | None:
    """An id chosen in a list; a non-number is a field error."""
    text = value.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        errors.add(name, "Choose one from the list.")
        return None
    return int(text)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A cell as written: numbers as they are; text that a spreadsheet would read as a formula
    (OWASP's CSV injection list) prefixed with a single quote; nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_response(
    filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> HttpResponse:
    """A CSV attachment: a header row, then one line per row."""
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    writer = csv.writer(response)
    writer.writerow(header)
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return response

"""The audit log: a browser of events (newest first, paged by ``seq`` like the API, never by
OFFSET over a log that grows without bound), one event with its Merkle leaf and a link to its
inclusion proof, and the log's integrity at a glance: the signing key's fingerprint to compare with
the one on paper, the last signed checkpoint and the last verification."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_GET

from appliance.accounts.permissions import Capability, allows
from appliance.audit import selectors
from appliance.audit.checkpoints import checkpoint_latest
from appliance.audit.models import AuditEvent, AuditSigningKey, AuditVerification
from appliance.console.base import PAGE_SIZE, ConsoleRequest, console_view, not_found
from appliance.console.views import audit_exports, audit_retention
from appliance.console.views.report_helpers import (
    actor_kind_choices,
    audit_query,
    outcome_choices,
)

PROBLEMS_SHOWN = 20


@dataclass
class SeqPage:
    """One page of events by ``seq``: ``older`` and ``newer`` are the cursors of the pages
    beside it (None at either end)."""

    events: list[AuditEvent]
    older: int | None
    newer: int | None


def _cursor(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None  # a cursor is not typed by people: a bad one shows the newest page


def seq_page(events: QuerySet[AuditEvent], request: HttpRequest, size: int = PAGE_SIZE) -> SeqPage:
    """``?before=seq`` (older events) or ``?after=seq`` (newer); each page reads ``size + 1``
    rows by the primary key, however long the log."""
    before, after = _cursor(request.GET.get("before")), _cursor(request.GET.get("after"))
    if after is not None:
        chunk = list(events.filter(seq__gt=after).order_by("seq")[: size + 1])
        rows = list(reversed(chunk[:size]))
        if rows:
            older = rows[-1].seq if events.filter(seq__lt=rows[-1].seq).exists() else None
            return SeqPage(rows, older, rows[0].seq if len(chunk) > size else None)
        before = None
    chunk = list((events if before is None else events.filter(seq__lt=before))[: size + 1])
    rows = chunk[:size]
    older = rows[-1].seq if len(chunk) > size else None
    newer = None
    if before is not None and rows and events.filter(seq__gt=rows[0].seq).exists():
        newer = rows[0].seq
    return SeqPage(rows, older, newer)


def _query_without_cursor(request: HttpRequest) -> str:
    params = request.GET.copy()
    for name in ("before", "after", "page"):
        params.pop(name, None)
    return params.urlencode()


def integrity() -> dict[str, Any]:
    """What an auditor checks first: the key that signs now, the last checkpoint, the last
    verification (read only: the checkpoint job makes the key on first use)."""
    keys = list(AuditSigningKey.objects.order_by("-created_at"))
    verification = AuditVerification.objects.order_by("-id").first()
    return {
        "active_key": next((k for k in keys if k.retired_at is None), None),
        "retired_keys": [k for k in keys if k.retired_at is not None],
        "checkpoint": checkpoint_latest(),
        "verification": verification,
        "problems": verification.problems[:PROBLEMS_SHOWN] if verification else [],
        "newest": AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first(),
    }


@console_view(Capability.AUDIT_VIEW)
@require_GET
def audit_page(request: ConsoleRequest) -> HttpResponse:
    """The log, newest first, filtered as the API filters it, beside the integrity facts."""
    query = audit_query(request.GET)
    context: dict[str, Any] = {
        **integrity(),
        "typed": query.typed,
        "errors": query.errors,
        "actor_kinds": actor_kind_choices(),
        "outcomes": outcome_choices(),
        "query": _query_without_cursor(request),
        "filtered": any(query.typed.values()),
        "can_export": allows(request.actor, Capability.AUDIT_EXPORT),
    }
    if query.errors:
        return render(request, "console/pages/audit.html", context, status=422)
    events = selectors.audit_event_list(actor=request.actor, **query.filters)
    context["page"] = seq_page(events, request)
    return render(request, "console/pages/audit.html", context)


@console_view(Capability.AUDIT_VIEW)
@require_GET
def audit_event(request: ConsoleRequest, seq: int) -> HttpResponse:
    """One event, every field, and how to prove it is in the signed log."""
    event = selectors.audit_event_list(actor=request.actor).filter(seq=seq).first()
    if event is None:
        return not_found(request, "audit event")
    checkpoint = checkpoint_latest()
    signed = checkpoint is not None and event.seq <= checkpoint.tree_size
    context = {
        "event": event,
        "details": json.dumps(event.details, indent=2, sort_keys=True, ensure_ascii=False),
        "checkpoint": checkpoint,
        "proof_url": f"{reverse('api-v1:inclusion')}?seq={event.seq}" if signed else "",
    }
    return render(request, "console/pages/audit_event.html", context)


urlpatterns = [
    path("audit", audit_page, name="audit"),
    path("audit/events/<int:seq>", audit_event, name="audit-event"),
    *audit_exports.urlpatterns,
    *audit_retention.urlpatterns,
]

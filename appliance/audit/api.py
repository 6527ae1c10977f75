"""Audit API: the log, newest first, with cursor pagination (it grows without bound)."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import CursorPagination, paginate

from appliance.api.base import MAX_PAGE, actor_of, error_responses, get_or_404
from appliance.audit import selectors
from appliance.audit.models import AuditEvent
from appliance.audit.schemas import AuditEventOut, AuditFilter

router = Router(tags=["audit"])


@router.get("/events", response={200: list[AuditEventOut], **error_responses(401, 403)})
@paginate(CursorPagination, ordering=("-seq",), page_size=50, max_page_size=MAX_PAGE)
def list_events(request: HttpRequest, filters: Query[AuditFilter]) -> Any:
    """Filter by time range, actor, action (exact, or a prefix such as ``model.``) and object."""
    return selectors.audit_event_list(actor=actor_of(request), **filters.dict())


@router.get("/events/{seq}", response={200: AuditEventOut, **error_responses(401, 403, 404)})
def get_event(request: HttpRequest, seq: int) -> AuditEvent:
    return get_or_404(selectors.audit_event_list(actor=actor_of(request)), "audit event", seq=seq)

"""Usage API (/api/v1/usage): what applications used, per hour or day, and request by request.
App owners see their own applications' usage only."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router
from ninja.pagination import CursorPagination, paginate

from appliance.api.base import MAX_PAGE, OrderedPagination, actor_of, error_responses
from appliance.gateway import selectors
from appliance.gateway.schemas import RecordFilter, RollupFilter, UsageRecordOut, UsageRollupOut

router = Router(tags=["usage"])


@router.get("", response={200: list[UsageRollupOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_rollups(request: HttpRequest, filters: Query[RollupFilter]) -> Any:
    """Requests, errors, tokens and average latency per application, model and adapter, per UTC
    hour or day (recomputed every few minutes), oldest first."""
    return selectors.usage_rollup_list(actor=actor_of(request), **filters.dict())


@router.get("/records", response={200: list[UsageRecordOut], **error_responses(401, 403)})
@paginate(CursorPagination, ordering=("-time", "-id"), page_size=50, max_page_size=MAX_PAGE)
def list_records(request: HttpRequest, filters: Query[RecordFilter]) -> Any:
    """One row per gateway request (no prompt or completion text), newest first."""
    return selectors.usage_record_list(actor=actor_of(request), **filters.dict())

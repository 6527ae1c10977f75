"""Building blocks every context's API shares: strict input schemas, the error body, pagination,
and the actor behind a request."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Schema
from ninja.pagination import LimitOffsetPagination
from pydantic import ConfigDict

from appliance.core.actors import Actor
from appliance.core.errors import NotAuthenticated, NotFound

MAX_PAGE = 200


class InSchema(Schema):
    """Request bodies: unknown fields are refused, so no one can mass-assign an owner or role."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(Schema):
    """The one error body of the management API (docs/api.md)."""

    code: str
    detail: str
    fields: dict[str, list[str]] = {}
    request_id: str


class OrderedPagination(LimitOffsetPagination):
    """``?limit=&offset=`` → ``{items, count}``. Refuses unordered querysets, whose pages could
    repeat or skip rows."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_limit=MAX_PAGE, **kwargs)

    def paginate_queryset(
        self, queryset: QuerySet[Any], pagination: Any, request: HttpRequest, **params: Any
    ) -> Any:
        if not queryset.ordered:
            raise TypeError(f"unordered queryset of {queryset.model.__name__} cannot be paginated")
        return super().paginate_queryset(queryset, pagination, request, **params)


def actor_of(request: HttpRequest) -> Actor:
    """The Actor that authentication attached to this request."""
    actor = getattr(request, "auth", None)
    if not isinstance(actor, Actor):
        raise NotAuthenticated("Sign in or send an API token.")
    return actor


def error_responses(*statuses: int) -> dict[int, type[ErrorOut]]:
    """The error statuses an operation documents, all with the one error body."""
    return dict.fromkeys(statuses, ErrorOut)


def get_or_404(queryset: QuerySet[Any], what: str, **lookup: Any) -> Any:
    """One object, or NotFound: objects a caller may not see answer exactly like missing ones."""
    found = queryset.filter(**lookup).first()
    if found is None:
        raise NotFound(f"No such {what}.")
    return found

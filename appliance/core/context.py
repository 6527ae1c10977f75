"""Per-request context (request id, source address) that audit events and log lines carry.

Context variables follow a request across ``sync_to_async`` hops, so services need not be handed a
request object.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
source_ip_var: ContextVar[str] = ContextVar("source_ip", default="")


def current_request_id() -> str:
    """The id of the request being served, or "" outside a request."""
    return request_id_var.get()


def current_source_ip() -> str:
    """The client address of the request being served, or "" outside a request."""
    return source_ip_var.get()


class RequestIdLogFilter(logging.Filter):
    """Adds ``request_id`` to every log record so a line can be matched to an audit event."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id() or "-"
        return True

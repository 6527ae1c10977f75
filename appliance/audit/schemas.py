"""Response bodies of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, ModelSchema, Schema

from appliance.audit.models import AuditEvent


class AuditEventOut(ModelSchema):
    details: dict[str, Any]

    class Meta:
        model = AuditEvent
        fields = [
            "seq",
            "time",
            "actor_kind",
            "actor_id",
            "actor_label",
            "action",
            "object_type",
            "object_id",
            "outcome",
            "request_id",
            "source_ip",
            "leaf_hash",
        ]


class AuditFilter(Schema):
    since: datetime | None = Field(None, description="Events at or after this time.")
    until: datetime | None = Field(None, description="Events before this time.")
    actor_kind: str | None = Field(None, max_length=16)
    actor_id: str | None = Field(None, max_length=64)
    action: str | None = Field(
        None, max_length=64, description="Exact action, or a prefix ending in '.'."
    )
    object_type: str | None = Field(None, max_length=32)
    object_id: str | None = Field(None, max_length=64)
    outcome: str | None = Field(None, max_length=16)

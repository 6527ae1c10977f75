"""Response bodies of the audit API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, ModelSchema, Schema
from pydantic import AwareDatetime, ConfigDict

from appliance.api.base import InSchema
from appliance.audit.checkpoints import checkpoint_note
from appliance.audit.models import AuditCheckpoint, AuditEvent, AuditExport
from appliance.core.models import Job


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


class SigningKeyOut(Schema):
    fingerprint: str
    public_key_pem: str
    created_at: datetime
    retired_at: datetime | None


class CheckpointOut(Schema):
    id: int
    origin: str
    tree_size: int
    root: str = Field(description="Merkle root, hex.")
    key_fingerprint: str = Field(alias="key.fingerprint")
    created_at: datetime
    note: str = Field(description="The C2SP signed note.")

    @staticmethod
    def resolve_note(obj: AuditCheckpoint) -> str:
        return checkpoint_note(obj)


class InclusionProofOut(Schema):
    seq: int
    leaf_index: int
    leaf_hash: str
    tree_size: int
    root: str
    proof: list[str] = Field(description="RFC 6962 audit path, hex, leaf side first.")


class ConsistencyProofOut(Schema):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str] = Field(description="RFC 6962 consistency proof, hex.")


class VerificationOut(Schema):
    id: int
    started_at: datetime
    finished_at: datetime
    valid: bool
    events_checked: int
    checkpoints_checked: int
    tree_size: int
    root: str
    problems: list[str]
    problem_count: int


class ExportIn(AuditFilter):
    """What to export: the time range picks a contiguous run of events; the other filters pick
    the rows of the readable events.csv. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class ExportOut(Schema):
    id: UUID
    filters: dict[str, str]
    requested_by: str
    created_at: datetime
    status: str
    progress: float
    error: str
    first_seq: int | None
    last_seq: int | None
    selected: int | None
    tree_size: int | None
    sha256: str
    size: int | None

    @staticmethod
    def _job(obj: AuditExport) -> Job | None:
        """The export's job, looked up once per export (three fields read it)."""
        if not hasattr(obj, "_job"):
            obj._job = Job.objects.filter(  # type: ignore[attr-defined]
                object_type="audit_export", object_id=str(obj.pk)
            ).first()
        job: Job | None = obj._job  # type: ignore[attr-defined]
        return job

    @staticmethod
    def resolve_status(obj: AuditExport) -> str:
        job = ExportOut._job(obj)
        return job.status if job else ""

    @staticmethod
    def resolve_progress(obj: AuditExport) -> float:
        job = ExportOut._job(obj)
        return job.progress if job else 0.0

    @staticmethod
    def resolve_error(obj: AuditExport) -> str:
        job = ExportOut._job(obj)
        return job.error if job else ""


class RetentionOut(Schema):
    category: str
    days: int
    floor: int
    purged: bool = Field(description="False for audit events, which are never deleted.")


class RetentionIn(InSchema):
    days: int = Field(description="Days to keep; at least the category's floor.")


class LegalHoldIn(InSchema):
    name: str = Field(max_length=100)
    reason: str = Field(max_length=2000)
    application_id: int | None = Field(None, description="Only this application's data.")
    starts_at: AwareDatetime | None = Field(None, description="Data from this time on.")
    ends_at: AwareDatetime | None = Field(None, description="Data before this time.")


class LegalHoldOut(Schema):
    id: int
    name: str
    reason: str
    application_id: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    placed_by: str
    placed_at: datetime
    released_by: str
    released_at: datetime | None


class BreachIn(InSchema):
    title: str = Field(max_length=200)
    description: str = Field(max_length=20000)
    aware_at: AwareDatetime = Field(description="When the organisation became aware of the breach.")
    categories: list[str] = Field(
        default_factory=list, max_length=10, description="Data categories affected."
    )
    subjects_estimate: int | None = Field(None, ge=0, le=2**31 - 1)
    measures: str = Field("", max_length=20000)


class BreachReportIn(InSchema):
    reported_at: AwareDatetime
    delay_reason: str = Field("", max_length=20000)


class BreachOut(Schema):
    id: int
    title: str
    description: str
    aware_at: datetime
    deadline: datetime
    categories: list[str]
    subjects_estimate: int | None
    measures: str
    reported_at: datetime | None
    delay_reason: str
    recorded_by: str
    created_at: datetime


class AccessReportFilter(Schema):
    since: AwareDatetime
    until: AwareDatetime
    object_type: str | None = Field(None, max_length=32)
    object_id: str | None = Field(None, max_length=64)
    actor_kind: str | None = Field(None, max_length=16)
    actor_id: str | None = Field(None, max_length=64)


class AccessRowOut(Schema):
    actor_kind: str
    actor_id: str
    actor_label: str
    action: str
    object_type: str
    object_id: str
    count: int
    first: datetime
    last: datetime

"""Response bodies of cross-cutting resources."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from ninja import Schema


class JobOut(Schema):
    id: UUID
    kind: str
    status: str
    object_type: str
    object_id: str
    progress: float
    progress_done: int
    progress_total: int
    log: list[str]
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

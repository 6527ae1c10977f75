"""Cross-cutting tables: background jobs the console and API can show."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from appliance.core.choices import JobKind, JobStatus


class Job(models.Model):
    """A long-running piece of background work (import, hashing, export) with visible progress.

    Progress and log lines are operational state, not audit events; the outcome a job produces
    (a model becoming ``pending``, a quarantine) is audited by the service that records it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=32, choices=JobKind.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    params = models.JSONField(default=dict)  # what the task needs besides the object (no secrets)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    log = models.JSONField(default=list)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def progress(self) -> float:
        """Fraction done, 0..1 (1 for finished jobs with nothing to count)."""
        if self.progress_total <= 0:
            return 1.0 if self.status == JobStatus.SUCCEEDED else 0.0
        return min(1.0, self.progress_done / self.progress_total)

"""Named choices shared across contexts."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobKind(models.TextChoices):
    ARTIFACT_IMPORT = "artifact_import"
    ARTIFACT_VERIFY = "artifact_verify"
    AUDIT_EXPORT = "audit_export"

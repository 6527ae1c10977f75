"""Outcomes an audit event can record."""

from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"


class DataCategory(models.TextChoices):
    """What the appliance keeps, each with its own retention (GDPR Art. 5(1)(e))."""

    CONTENT = "content"  # prompts and completions, only where a data policy keeps them
    USAGE = "usage"  # per-request usage records (the inference log beside the audit events)
    GPU_SAMPLES = "gpu_samples"  # GPU telemetry history
    AUDIT = "audit"  # audit events: never deleted (see docs/audit.md)

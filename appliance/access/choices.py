"""What an application is allowed to send, and what the appliance may keep of it."""

from __future__ import annotations

from django.db import models


class DataClassification(models.TextChoices):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"  # patient (PHI) or cardholder (PCI) data


class DataPolicy(models.TextChoices):
    NO_CONTENT = "no_content"  # prompts and completions are never stored (the default)
    KEEP_ENCRYPTED = "keep_encrypted"  # stored encrypted under a per-subject key (issue 5)


class ApplicationStatus(models.TextChoices):
    ACTIVE = "active"
    DISABLED = "disabled"  # every key refused until enabled again

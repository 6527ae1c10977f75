"""Life cycle of registry entries (base models and adapters)."""

from __future__ import annotations

from django.db import models


class EntryStatus(models.TextChoices):
    IMPORTING = "importing"  # files being hashed (a job)
    PENDING = "pending"  # hashed, waiting for a second admin's approval
    APPROVED = "approved"  # may be deployed
    RETIRED = "retired"  # kept for the record, never deployed again
    QUARANTINED = "quarantined"  # a re-verification found changed files
    FAILED = "failed"  # the import job failed


class Storage(models.TextChoices):
    COPY = "copy"  # files copied into the content-addressed store
    REFERENCE = "reference"  # files hashed and used where they are


# An entry may be retired from any of these; approval only from PENDING.
RETIRABLE = {EntryStatus.PENDING, EntryStatus.APPROVED, EntryStatus.QUARANTINED, EntryStatus.FAILED}
VERIFIABLE = {EntryStatus.PENDING, EntryStatus.APPROVED, EntryStatus.QUARANTINED}

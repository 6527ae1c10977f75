"""The append-only audit log.

Rows are never updated or deleted: database triggers refuse both (see migration 0002). Each row
stores the SHA-256 leaf hash (RFC 6962: ``SHA-256(0x00 || canonical bytes)``) of its RFC 8785
canonical form, computed at insert, so the Merkle tree and signed checkpoints can be built on top
without rewriting history.
"""

from __future__ import annotations

from django.db import models

from appliance.audit.choices import Outcome


class AuditSequence(models.Model):
    """One row holding the last issued ``seq``; its row lock keeps sequence numbers gap-free."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"audit sequence at {self.value}"


class AuditEvent(models.Model):
    """One thing that happened: who did what to which object, when, from where, and how it ended."""

    seq = models.BigIntegerField(primary_key=True)
    time = models.DateTimeField()
    actor_kind = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64)
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    request_id = models.CharField(max_length=64, blank=True)
    source_ip = models.CharField(max_length=45, blank=True)
    details = models.JSONField(default=dict)
    schema_version = models.PositiveSmallIntegerField(default=1)
    leaf_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["seq"]
        indexes = [
            models.Index(fields=["time"]),
            models.Index(fields=["action"]),
            models.Index(fields=["actor_kind", "actor_id"]),
            models.Index(fields=["object_type", "object_id"]),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} by {self.actor_label}"

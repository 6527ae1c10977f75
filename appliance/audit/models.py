"""The append-only audit log.

Rows are never updated or deleted: database triggers refuse both (see migration 0002). Each row
stores the SHA-256 leaf hash (RFC 6962: ``SHA-256(0x00 || canonical bytes)``) of its RFC 8785
canonical form, computed at insert, so the Merkle tree and signed checkpoints can be built on top
without rewriting history.
"""

from __future__ import annotations

import uuid

from django.db import models

from appliance.audit.choices import DataCategory, Outcome


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


class AuditTile(models.Model):
    """The root of leaves ``[index * TILE, (index + 1) * TILE)``, stored once the tile is full and
    checkpointed, so proofs over a large log read a few hundred hashes, not the whole table."""

    index = models.BigIntegerField(primary_key=True)
    hash = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"tile {self.index}"


class AuditSigningKey(models.Model):
    """An Ed25519 key that signs checkpoints and export manifests. The private half is stored
    wrapped by the master key; retired keys stay so their checkpoints remain verifiable."""

    fingerprint = models.CharField(max_length=71, unique=True)  # "sha256:" + hex of the raw key
    public_key = models.CharField(max_length=64)  # raw 32 bytes, hex
    private_key = models.TextField()  # wrapped (appliance.core.crypto.wrap)
    created_at = models.DateTimeField(auto_now_add=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["retired_at"],
                condition=models.Q(retired_at__isnull=True),
                name="audit_one_active_signing_key",
            )
        ]

    def __str__(self) -> str:
        return self.fingerprint


class AuditCheckpoint(models.Model):
    """A signed statement of the log's size and Merkle root at one moment (a C2SP signed note),
    with the compact range that lets the next checkpoint extend it without rehashing history, and
    the consistency proof from the checkpoint before it."""

    origin = models.CharField(max_length=200)
    tree_size = models.BigIntegerField()
    root = models.CharField(max_length=64)
    signature = models.CharField(max_length=88)  # base64 Ed25519 over the note body
    key = models.ForeignKey(AuditSigningKey, on_delete=models.PROTECT, related_name="checkpoints")
    previous = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    consistency = models.JSONField(default=list)  # hex hashes, from previous.tree_size
    frontier = models.JSONField(default=list)  # hex hashes, largest subtree first
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["tree_size"])]
        constraints = [  # one chain: two workers cannot both extend the same checkpoint
            models.UniqueConstraint(fields=["previous"], name="audit_checkpoint_one_successor"),
            models.UniqueConstraint(
                fields=["origin"],
                condition=models.Q(previous__isnull=True),
                name="audit_checkpoint_one_first",
            ),
        ]

    def __str__(self) -> str:
        return f"checkpoint {self.tree_size} {self.root[:12]}"


class AuditVerification(models.Model):
    """The result of recomputing the whole log against its checkpoints (``audit verify``)."""

    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    valid = models.BooleanField()
    events_checked = models.BigIntegerField()
    checkpoints_checked = models.IntegerField()
    tree_size = models.BigIntegerField()
    root = models.CharField(max_length=64)
    problems = models.JSONField(default=list)  # the first problems found, in seq order
    problem_count = models.IntegerField(default=0)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"verification {self.pk}: {'valid' if self.valid else 'INVALID'}"


class AuditExport(models.Model):
    """A signed export bundle an auditor asked for: its filters, what it covers, and the file."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    filters = models.JSONField(default=dict)
    requested_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    first_seq = models.BigIntegerField(null=True, blank=True)
    last_seq = models.BigIntegerField(null=True, blank=True)
    selected = models.BigIntegerField(null=True, blank=True)
    tree_size = models.BigIntegerField(null=True, blank=True)
    file_name = models.CharField(max_length=100, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    size = models.BigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"audit export {self.id}"


class RetentionPolicy(models.Model):
    """How many days one category of data is kept. Services refuse values below the category's
    floor (appliance.audit.retention.FLOORS)."""

    category = models.CharField(max_length=16, choices=DataCategory.choices, unique=True)
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["category"]

    def __str__(self) -> str:
        return f"{self.category}: {self.days} days"


class LegalHold(models.Model):
    """Data that must not be purged while the hold is active (litigation, investigation, a
    regulator's request): content and usage of one application, or of all, in a time window."""

    name = models.CharField(max_length=100)
    reason = models.TextField()
    application = models.ForeignKey(
        "access.Application", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    starts_at = models.DateTimeField(null=True, blank=True)  # data from this time (or all)
    ends_at = models.DateTimeField(null=True, blank=True)  # data before this time (or all)
    placed_by = models.CharField(max_length=200)
    placed_at = models.DateTimeField(auto_now_add=True)
    released_by = models.CharField(max_length=200, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-placed_at"]

    def __str__(self) -> str:
        return f"legal hold {self.name}"


class BreachRecord(models.Model):
    """A personal-data breach as GDPR Art. 33 needs it recorded: when the appliance's operator
    became aware, the 72-hour deadline for telling the supervisory authority, what is known, what
    was done, and when (and whether in time) it was reported."""

    title = models.CharField(max_length=200)
    description = models.TextField()
    aware_at = models.DateTimeField()
    deadline = models.DateTimeField()  # aware_at + 72 hours
    categories = models.JSONField(default=list)  # DataCategory values affected
    subjects_estimate = models.PositiveIntegerField(null=True, blank=True)
    measures = models.TextField(blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    delay_reason = models.TextField(blank=True)  # Art. 33(1): required when reported late
    recorded_by = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-aware_at"]

    def __str__(self) -> str:
        return f"breach {self.pk}: {self.title}"

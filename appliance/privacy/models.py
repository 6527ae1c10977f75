"""Content kept for applications whose data policy is ``keep_encrypted``, and the keys it is
encrypted under.

Each data subject of an application has its own AES-256 data key, stored only wrapped by the master
key (appliance.core.crypto). Content rows hold ciphertext alone; erasing a subject destroys its key,
which makes every row encrypted under it unreadable at once (GDPR Art. 17 by key destruction).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from appliance.access.models import Application
from appliance.gateway.models import UsageRecord
from appliance.privacy.choices import ContentKind


class SubjectKey(models.Model):
    """A data subject's data key within one application. ``subject`` is the pseudonym of the
    subject id (never the id itself); erasure empties ``wrapped_key`` and sets ``erased_at``. A
    subject seen again after erasure gets a new row and a new key."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="+")
    subject = models.CharField(max_length=80)  # appliance.core.secrets.pseudonym of the id
    wrapped_key = models.TextField(blank=True)  # appliance.core.crypto.wrap of 32 bytes
    created_at = models.DateTimeField(auto_now_add=True)
    erased_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["application", "subject"], name="privacy_key_subject")]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "subject"],
                condition=Q(erased_at__isnull=True),
                name="privacy_one_live_key_per_subject",
            ),
            models.CheckConstraint(
                condition=Q(erased_at__isnull=True, wrapped_key__gt="")
                | Q(erased_at__isnull=False, wrapped_key=""),
                name="privacy_erased_key_is_destroyed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application_id} {self.subject[:24]}…"

    @property
    def purpose(self) -> str:
        """What the wrapping is bound to, so a wrapped key copied to another row does not unwrap."""
        return subject_key_purpose(self.application_id, self.subject)


def subject_key_purpose(application_id: int, subject: str) -> str:
    return f"privacy.subject-key:{application_id}:{subject}"


class StoredContent(models.Model):
    """A request's prompt or completion: 12-byte nonce || AES-256-GCM ciphertext and tag, under
    its subject's data key, with the row's identity (application, request id, kind) as associated
    data, so ciphertext moved to another row does not decrypt."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="+")
    subject_key = models.ForeignKey(SubjectKey, on_delete=models.PROTECT, related_name="content")
    # The request's usage record. Content has its own retention (appliance.audit.retention), so
    # purging usage records leaves it to that.
    usage_record = models.ForeignKey(
        UsageRecord, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    request_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=ContentKind.choices)
    ciphertext = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["request_id"], name="privacy_content_request")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.kind}"


def content_aad(application_id: int, request_id: str, kind: str) -> bytes:
    """The associated data of a content row: its identity."""
    return f"privacy.content:{application_id}:{request_id}:{kind}".encode()

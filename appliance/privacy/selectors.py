"""Reads of stored content and of what each master key still wraps."""

from __future__ import annotations

from collections import Counter

from django.db.models import QuerySet

from appliance.audit.models import AuditSigningKey
from appliance.core.crypto import wrapped_by
from appliance.privacy.models import StoredContent, SubjectKey


def stored_content_for_request(*, request_id: str) -> QuerySet[StoredContent]:
    """Every content row of a request id (a client may reuse its ids: one exchange per usage
    record), oldest first."""
    return (
        StoredContent.objects.filter(request_id=request_id)
        .select_related("subject_key", "usage_record")
        .order_by("created_at", "id")
    )


def wrapped_key_census() -> dict[str, Counter[str]]:
    """How many live subject keys and audit signing keys each master key id wraps: rotation is
    complete when only the current id is left."""
    subject_keys: Counter[str] = Counter()
    live = SubjectKey.objects.filter(erased_at__isnull=True).values_list("wrapped_key", flat=True)
    for wrapped in live.iterator(chunk_size=2000):
        subject_keys[wrapped_by(wrapped)] += 1
    signing_keys = Counter(
        wrapped_by(wrapped)
        for wrapped in AuditSigningKey.objects.values_list("private_key", flat=True)
    )
    return {"subject_keys": subject_keys, "signing_keys": signing_keys}

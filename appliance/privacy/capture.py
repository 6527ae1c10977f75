"""What the gateway keeps of a request when its application's data policy is ``keep_encrypted``:
the prompt, sealed before the request is forwarded (so a key that cannot be had stops the request
before any answer), and the completion, sealed when the answer is complete. The sealed rows are
written with the request's usage record, in the same transaction.

Nothing here runs for applications whose policy is ``no_content``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from appliance.core.crypto import KeyUnavailable
from appliance.gateway.models import UsageRecord
from appliance.privacy.choices import ContentKind
from appliance.privacy.keys import seal, subject_key_live, subject_pseudonym
from appliance.privacy.models import StoredContent, content_aad


class CaptureFailed(Exception):
    """The content cannot be encrypted (no usable key, database down): the request must fail."""


def plaintext_of(value: Any) -> bytes:
    """UTF-8 JSON. ``surrogatepass``: JSON may carry lone surrogates, and they are kept as sent."""
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@dataclass
class Capture:
    """One request's content, sealed under its subject's data key."""

    application_id: int
    request_id: str
    subject_key_id: int
    data_key: bytes = field(repr=False)
    sealed: dict[str, bytes] = field(default_factory=dict, repr=False)

    def seal(self, kind: str, value: Any) -> None:
        aad = content_aad(self.application_id, self.request_id, kind)
        self.sealed[kind] = seal(self.data_key, plaintext_of(value), aad)

    def seal_completion(self, texts: list[str]) -> None:
        """The text of each choice, in index order; nothing if no text came back."""
        if texts:
            self.seal(ContentKind.COMPLETION, texts)

    def rows(self, usage_record: UsageRecord) -> list[StoredContent]:
        return [
            StoredContent(
                application_id=self.application_id,
                subject_key_id=self.subject_key_id,
                usage_record=usage_record,
                request_id=self.request_id,
                kind=kind,
                ciphertext=sealed,
            )
            for kind, sealed in self.sealed.items()
        ]


def capture_open(
    *, application_id: int, request_id: str, subject: str | None, prompt: Any
) -> Capture:
    """The subject's key (created on first use) and the sealed prompt; raises CaptureFailed."""
    try:
        key, data_key = subject_key_live(
            application_id=application_id, subject=subject_pseudonym(subject)
        )
    except (KeyUnavailable, DatabaseError) as exc:
        raise CaptureFailed(type(exc).__name__) from exc
    capture = Capture(application_id, request_id, key.pk, data_key)
    capture.seal(ContentKind.PROMPT, prompt)
    return capture

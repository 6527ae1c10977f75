"""Request and response bodies of the privacy API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema

from appliance.api.base import InSchema
from appliance.privacy.keys import SUBJECT_PATTERN


class SubjectEraseIn(InSchema):
    application_id: int
    subject: str | None = Field(
        None,
        pattern=f"^{SUBJECT_PATTERN.pattern}$",
        description=(
            "The subject id exactly as sent in `X-Appliance-Subject` (1 to 128 printable ASCII "
            "characters). Omit it (or send null) for the content sent without the header."
        ),
    )


class SubjectErasureOut(Schema):
    application_id: int
    subject: str = Field(description="The subject's pseudonym, as the audit log names it.")
    erased_at: datetime
    content_rows: int = Field(description="Stored prompts and completions made unreadable.")


class StoredExchangeOut(Schema):
    application_id: int
    usage_record_id: int | None
    time: datetime
    subject: str = Field(description="The subject's pseudonym.")
    erased: bool
    prompt: Any = Field(
        None, description="The request's `messages`, `prompt` or `input`, as sent (JSON)."
    )
    completions: list[str] | None = Field(None, description="The text of each choice.")


class StoredContentOut(Schema):
    request_id: str
    exchanges: list[StoredExchangeOut] = Field(
        description="One per request that used this id (normally one)."
    )

"""Times from callers: a time without a zone is ambiguous, so it is refused, never guessed."""

from __future__ import annotations

from datetime import datetime

from django.utils.timezone import is_naive

from appliance.core.errors import ValidationFailed


def refuse_naive(**times: datetime | None) -> None:
    """Raise ValidationFailed naming each given time that has no zone."""
    naive = [name for name, value in times.items() if value is not None and is_naive(value)]
    if naive:
        raise ValidationFailed(
            "Give times with a zone, e.g. 2026-01-31T00:00:00Z.",
            fields={name: ["A time zone is required."] for name in naive},
        )

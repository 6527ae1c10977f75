"""What a stored content row holds."""

from __future__ import annotations

from django.db import models


class ContentKind(models.TextChoices):
    PROMPT = "prompt"  # the request's messages / prompt / input, as UTF-8 JSON
    COMPLETION = "completion"  # the text of each choice, as a UTF-8 JSON list

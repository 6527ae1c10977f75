"""Gateway endpoints and usage periods."""

from __future__ import annotations

from django.db import models


class Endpoint(models.TextChoices):
    CHAT = "chat.completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


class UsagePeriod(models.TextChoices):
    HOUR = "hour"
    DAY = "day"

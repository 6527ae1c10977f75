"""Outcomes an audit event can record."""

from __future__ import annotations

from django.db import models


class Outcome(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"
    DENIED = "denied"

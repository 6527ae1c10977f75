"""Periodic jobs of accounts (scheduled in settings.CELERY_BEAT_SCHEDULE): thin wrappers."""

from __future__ import annotations

from celery import shared_task

from appliance.accounts.break_glass import break_glass_expire


@shared_task(name="accounts.expire_break_glass", ignore_result=True, time_limit=60)
def expire_break_glass() -> int:
    """Write the expiry event of emergency access whose time is up (the access itself ends at
    its time whether or not this runs)."""
    return break_glass_expire()

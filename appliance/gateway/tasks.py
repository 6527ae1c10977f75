"""Periodic jobs of the gateway (scheduled in settings.CELERY_BEAT_SCHEDULE)."""

from __future__ import annotations

from celery import shared_task

from appliance.gateway.usage import usage_rollup


@shared_task(name="gateway.rollup_usage", ignore_result=True, time_limit=10 * 60)
def rollup_usage() -> dict[str, int]:
    return usage_rollup()

"""Periodic jobs of the fleet (scheduled in settings.CELERY_BEAT_SCHEDULE): thin wrappers that call
a service. They take no arguments and are not retried: the next beat runs them again."""

from __future__ import annotations

from celery import shared_task

from appliance.fleet import services, telemetry


@shared_task(name="fleet.mark_offline_nodes", ignore_result=True, time_limit=60)
def mark_offline_nodes() -> list[str]:
    return services.nodes_mark_offline()


@shared_task(name="fleet.rollup_gpu_samples", ignore_result=True, time_limit=10 * 60)
def rollup_gpu_samples() -> dict[str, int]:
    return telemetry.gpu_samples_rollup()

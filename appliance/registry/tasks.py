"""Background jobs of the registry: thin wrappers that take a job id and call a service."""

from __future__ import annotations

from celery import shared_task

from appliance.registry import services

HOUR = 3600


@shared_task(name="registry.ingest_artifact", acks_late=True, time_limit=6 * HOUR)
def ingest_artifact(job_id: str) -> None:
    services.entry_ingest(job_id=job_id)


@shared_task(name="registry.verify_artifact", acks_late=True, time_limit=6 * HOUR)
def verify_artifact(job_id: str) -> None:
    services.entry_verify_run(job_id=job_id)

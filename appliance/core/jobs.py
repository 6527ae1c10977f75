"""Recording a job's progress; these writes are deliberately small and frequent-safe."""

from __future__ import annotations

from django.utils import timezone

from appliance.core.choices import JobStatus
from appliance.core.models import Job

MAX_LOG_LINES = 200


def job_start(*, job: Job, total: int) -> None:
    """Mark a job running with the amount of work it will count through."""
    job.status = JobStatus.RUNNING
    job.started_at = timezone.now()
    job.progress_total = total
    job.progress_done = 0
    job.save(update_fields=["status", "started_at", "progress_total", "progress_done"])


def job_progress(*, job: Job, done: int) -> None:
    """Store how much is done so far."""
    job.progress_done = done
    Job.objects.filter(pk=job.pk).update(progress_done=done)


def job_log(*, job: Job, line: str) -> None:
    """Append a log line (never content or secrets), keeping the last MAX_LOG_LINES."""
    stamped = f"{timezone.now().isoformat(timespec='seconds')} {line}"
    job.log = [*job.log, stamped][-MAX_LOG_LINES:]
    Job.objects.filter(pk=job.pk).update(log=job.log)


def job_finish(*, job: Job, error: str = "") -> None:
    """Close a job as succeeded, or failed with a reason."""
    job.status = JobStatus.FAILED if error else JobStatus.SUCCEEDED
    job.error = error
    job.finished_at = timezone.now()
    if not error:
        job.progress_done = job.progress_total
    job.save(update_fields=["status", "error", "finished_at", "progress_done"])

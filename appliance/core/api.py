"""Jobs API: progress and log of background work."""

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from ninja import Router
from ninja.pagination import paginate

from appliance.accounts.permissions import Capability, require
from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.core.models import Job
from appliance.core.schemas import JobOut

router = Router(tags=["jobs"])


@router.get("", response={200: list[JobOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_jobs(request: HttpRequest, status: str | None = None) -> Any:
    require(actor_of(request), Capability.JOBS_VIEW)
    jobs = Job.objects.order_by("-created_at", "id")
    return jobs.filter(status=status) if status else jobs


@router.get("/{job_id}", response={200: JobOut, **error_responses(401, 403, 404)})
def get_job(request: HttpRequest, job_id: UUID) -> Job:
    require(actor_of(request), Capability.JOBS_VIEW)
    return get_or_404(Job.objects.all(), "job", pk=job_id)

"""Usage rollups: per application, model and adapter, per UTC hour and day, recomputed from the
usage records for the recent buckets (a stream that began before the hour turned is counted in the
hour it began), so reports and budgets never scan the raw table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.utils import timezone

from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRecord, UsageRollup

TRUNC = {UsagePeriod.HOUR: TruncHour, UsagePeriod.DAY: TruncDay}


def _bucket_start(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == UsagePeriod.DAY else moment


def usage_rollup(*, now: datetime | None = None, hours: int = 2) -> dict[str, int]:
    """Recompute the hour buckets of the last ``hours`` hours and the day buckets they touch.
    Idempotent: running it twice gives the same rows."""
    now = now or timezone.now()
    written: dict[str, int] = {}
    for period in (UsagePeriod.HOUR, UsagePeriod.DAY):
        start = _bucket_start(now - timedelta(hours=hours - 1), period)
        rows = (
            UsageRecord.objects.filter(time__gte=start)
            .annotate(bucket=TRUNC[period]("time", tzinfo=UTC))
            .values(
                "bucket", "application_id", "model", "adapter", "deployment", "route", "task_class"
            )
            .annotate(
                requests=Count("id"),
                errors=Count("id", filter=Q(status__gte=400)),
                prompt=Sum("prompt_tokens"),
                completion=Sum("completion_tokens"),
                latency=Sum("latency_ms"),
                ttft=Sum("ttft_ms"),
                ttft_count=Count("ttft_ms"),
            )
            .order_by()
        )
        rollups = [
            UsageRollup(
                period=period,
                start=row["bucket"],
                application_id=row["application_id"],
                model=row["model"],
                adapter=row["adapter"],
                deployment=row["deployment"],
                route=row["route"],
                task_class=row["task_class"],
                requests=row["requests"],
                errors=row["errors"],
                prompt_tokens=row["prompt"] or 0,
                completion_tokens=row["completion"] or 0,
                latency_ms_sum=row["latency"] or 0,
                ttft_ms_sum=row["ttft"] or 0,
                ttft_count=row["ttft_count"],
            )
            for row in rows
        ]
        with transaction.atomic():
            UsageRollup.objects.filter(period=period, start__gte=start).delete()
            UsageRollup.objects.bulk_create(rollups)
        written[period] = len(rollups)
    return written

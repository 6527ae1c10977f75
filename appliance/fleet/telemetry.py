"""GPU inventory and history: what each heartbeat reports, and the periodic rollup that keeps
raw samples for a short window and minute and hour averages for longer."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Avg, Count, Max, Q
from django.utils import timezone

from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import system_actor
from appliance.fleet.choices import SampleResolution
from appliance.fleet.models import Gpu, GpuSample, Node
from appliance.fleet.services import node_actor

# Throttle reasons that mean "nothing is wrong": an idle GPU lowers its clocks.
BENIGN_THROTTLE = frozenset({"gpu_idle", "applications_clocks_setting"})


def _throttled(reasons: Any) -> bool | None:
    if reasons is None:
        return None
    return any(r not in BENIGN_THROTTLE for r in reasons)


def _json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: extra NVML readings that carry them are stored as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def gpus_record(*, node: Node, gpus: Iterable[dict[str, Any]], now: datetime) -> None:
    """Upsert the node's GPUs from one NVML snapshot and keep a raw sample of each."""
    seen = []
    for reading in gpus:
        index = int(reading["index"])
        uuid = reading.get("uuid") or f"index-{index}"
        gpu, _ = Gpu.objects.update_or_create(
            node=node,
            uuid=uuid,
            defaults={
                "index": index,
                "name": (reading.get("name") or "")[:100],
                "memory_total_bytes": reading.get("memory_total_bytes"),
                "memory_free_bytes": reading.get("memory_free_bytes"),
                "last_sample": _json_safe(reading),
                "last_seen_at": now,
                "present": True,
            },
        )
        seen.append(gpu.pk)
        GpuSample.objects.update_or_create(
            gpu=gpu,
            resolution=SampleResolution.RAW,
            time=now,
            defaults={
                "memory_used_bytes": reading.get("memory_used_bytes"),
                "utilization_gpu_pct": reading.get("utilization_gpu_pct"),
                "utilization_memory_pct": reading.get("utilization_memory_pct"),
                "temperature_c": reading.get("temperature_c"),
                "power_w": reading.get("power_w"),
                "ecc_corrected": reading.get("ecc_corrected"),
                "ecc_uncorrected": reading.get("ecc_uncorrected"),
                "throttled": _throttled(reading.get("throttle_reasons")),
            },
        )
    for gpu in node.gpus.exclude(pk__in=seen).filter(present=True):
        # A GPU that drops out of the inventory (pulled, or lost to an XID error) is an event.
        gpu.present = False
        gpu.save(update_fields=["present"])
        audit_record(
            actor=node_actor(node),
            action="gpu.lost",
            object_type="gpu",
            object_id=gpu.pk,
            outcome=Outcome.FAILURE,
            details={"node": node.name, "index": gpu.index, "uuid": gpu.uuid, "name": gpu.name},
        )


def _bucket(time: datetime, resolution: str) -> datetime:
    if resolution == SampleResolution.MINUTE:
        return time.replace(second=0, microsecond=0)
    return time.replace(minute=0, second=0, microsecond=0)


def _rollup(source: str, target: str, *, before: datetime) -> int:
    """Average ``source`` samples older than ``before`` into ``target`` buckets; re-running it
    recomputes the same buckets from the same samples, so it is idempotent."""
    since = GpuSample.objects.filter(resolution=target).aggregate(Max("time"))["time__max"]
    samples = GpuSample.objects.filter(resolution=source, time__lt=before)
    if since is not None:
        samples = samples.filter(time__gte=since)  # the last bucket may have grown
    written = 0
    buckets: dict[tuple[int, datetime], list[GpuSample]] = {}
    for sample in samples.order_by("gpu_id", "time"):
        buckets.setdefault((sample.gpu_id, _bucket(sample.time, target)), []).append(sample)
    for (gpu_id, start), group in buckets.items():
        end = start + (
            timedelta(minutes=1) if target == SampleResolution.MINUTE else timedelta(hours=1)
        )
        rows = GpuSample.objects.filter(
            gpu_id=gpu_id, resolution=source, time__gte=start, time__lt=end
        )
        agg = rows.aggregate(
            n=Count("id"),
            mem=Avg("memory_used_bytes"),
            util=Avg("utilization_gpu_pct"),
            mutil=Avg("utilization_memory_pct"),
            temp=Avg("temperature_c"),
            power=Avg("power_w"),
            ecc_c=Max("ecc_corrected"),
            ecc_u=Max("ecc_uncorrected"),
        )
        throttled_any = rows.filter(throttled=True).exists()
        known = rows.filter(~Q(throttled=None)).exists()
        weight = sum(s.count for s in group) if source != SampleResolution.RAW else agg["n"]
        GpuSample.objects.update_or_create(
            gpu_id=gpu_id,
            resolution=target,
            time=start,
            defaults={
                "count": weight,
                "memory_used_bytes": int(agg["mem"]) if agg["mem"] is not None else None,
                "utilization_gpu_pct": agg["util"],
                "utilization_memory_pct": agg["mutil"],
                "temperature_c": agg["temp"],
                "power_w": agg["power"],
                "ecc_corrected": agg["ecc_c"],
                "ecc_uncorrected": agg["ecc_u"],
                "throttled": throttled_any if known else None,
            },
        )
        written += 1
    return written


def gpu_samples_rollup(*, now: datetime | None = None) -> dict[str, int]:
    """Roll raw samples up into minutes and minutes into hours, then purge what is past its
    retention (periodic). Returns counts for the job's log."""
    now = now or timezone.now()
    with transaction.atomic():
        minutes = _rollup(
            SampleResolution.RAW, SampleResolution.MINUTE, before=_bucket(now, "minute")
        )
        hours = _rollup(SampleResolution.MINUTE, SampleResolution.HOUR, before=_bucket(now, "hour"))
        horizons = {
            SampleResolution.RAW: timedelta(hours=settings.APPLIANCE_GPU_RAW_RETENTION_HOURS),
            SampleResolution.MINUTE: timedelta(days=settings.APPLIANCE_GPU_MINUTE_RETENTION_DAYS),
            SampleResolution.HOUR: timedelta(days=settings.APPLIANCE_GPU_HOUR_RETENTION_DAYS),
        }
        purged = 0
        for resolution, keep in horizons.items():
            purged += GpuSample.objects.filter(resolution=resolution, time__lt=now - keep).delete()[
                0
            ]
        if purged:
            audit_record(
                actor=system_actor("retention"),
                action="gpu_samples.purge",
                object_type="gpu_sample",
                details={"purged": purged, "minute_buckets": minutes, "hour_buckets": hours},
            )
    return {"minute_buckets": minutes, "hour_buckets": hours, "purged": purged}

"""GPU history: the periodic rollup averages raw samples into minutes and minutes into hours
(nulls ignored, throttling if any real reason, ECC the highest), is idempotent, and purges each
resolution past its retention with an audited count, keeping everything inside the window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from appliance.audit.models import AuditEvent
from appliance.fleet.models import Gpu, GpuSample, Node
from appliance.fleet.telemetry import gpu_samples_rollup

pytestmark = pytest.mark.django_db

NOW = datetime(2025, 3, 1, 12, 10, 30, tzinfo=UTC)
T12 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T11 = datetime(2025, 3, 1, 11, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _retention(settings: Any) -> None:
    settings.APPLIANCE_GPU_RAW_RETENTION_HOURS = 24
    settings.APPLIANCE_GPU_MINUTE_RETENTION_DAYS = 14
    settings.APPLIANCE_GPU_HOUR_RETENTION_DAYS = 400


def make_gpu(node_name: str = "gpu-node", index: int = 0) -> Gpu:
    node, _ = Node.objects.get_or_create(
        name=node_name,
        defaults={"credential_prefix": node_name[:12].ljust(12, "0"), "credential_hash": "0" * 64},
    )
    return Gpu.objects.create(node=node, index=index, uuid=f"GPU-{node_name}-{index}")


@pytest.fixture
def gpu() -> Gpu:
    return make_gpu()


def sample(gpu: Gpu, time: datetime, resolution: str = "raw", **readings: Any) -> GpuSample:
    return GpuSample.objects.create(gpu=gpu, resolution=resolution, time=time, **readings)


def bucket(gpu: Gpu, resolution: str, time: datetime) -> GpuSample:
    return GpuSample.objects.get(gpu=gpu, resolution=resolution, time=time)


def snapshot() -> list[tuple[Any, ...]]:
    return list(
        GpuSample.objects.order_by("gpu_id", "resolution", "time").values_list(
            "gpu_id",
            "resolution",
            "time",
            "count",
            "memory_used_bytes",
            "utilization_gpu_pct",
            "utilization_memory_pct",
            "temperature_c",
            "power_w",
            "ecc_corrected",
            "ecc_uncorrected",
            "throttled",
        )
    )


def test_raw_samples_are_averaged_into_minute_buckets_ignoring_nulls(gpu: Gpu) -> None:
    sample(
        gpu,
        T12 + timedelta(seconds=5),
        memory_used_bytes=100,
        utilization_gpu_pct=10,
        utilization_memory_pct=1,
        temperature_c=40,
        power_w=50,
        ecc_corrected=1,
        ecc_uncorrected=0,
        throttled=False,
    )
    sample(
        gpu,
        T12 + timedelta(seconds=15),
        memory_used_bytes=301,
        utilization_gpu_pct=30,
        temperature_c=None,
        power_w=None,
        ecc_corrected=3,
        ecc_uncorrected=None,
        throttled=True,
    )
    sample(gpu, T12 + timedelta(seconds=59), throttled=None)  # NVML could read nothing

    result = gpu_samples_rollup(now=NOW)

    minute = bucket(gpu, "minute", T12)
    assert minute.count == 3
    assert minute.memory_used_bytes == 200  # (100 + 301) / 2, whole bytes
    assert minute.utilization_gpu_pct == 20
    assert minute.utilization_memory_pct == 1
    assert minute.temperature_c == 40
    assert minute.power_w == 50
    assert minute.ecc_corrected == 3
    assert minute.ecc_uncorrected == 0
    assert minute.throttled is True
    assert result["minute_buckets"] == 1
    assert result["purged"] == 0
    # The raw samples stay: they are well inside their window.
    assert GpuSample.objects.filter(resolution="raw").count() == 3


def test_a_bucket_of_unknown_readings_stays_unknown(gpu: Gpu) -> None:
    sample(gpu, T12 + timedelta(seconds=1))
    sample(gpu, T12 + timedelta(seconds=11))

    gpu_samples_rollup(now=NOW)

    minute = bucket(gpu, "minute", T12)
    assert minute.count == 2
    assert minute.utilization_gpu_pct is None
    assert minute.memory_used_bytes is None
    assert minute.ecc_corrected is None
    assert minute.throttled is None


def test_throttling_is_false_when_only_benign_reasons_were_seen(gpu: Gpu) -> None:
    sample(gpu, T12 + timedelta(seconds=1), throttled=False)
    sample(gpu, T12 + timedelta(seconds=11), throttled=None)

    gpu_samples_rollup(now=NOW)

    assert bucket(gpu, "minute", T12).throttled is False


def test_each_gpu_and_minute_gets_its_own_bucket(gpu: Gpu) -> None:
    other = make_gpu("other-node")
    sample(gpu, T12 + timedelta(seconds=10), utilization_gpu_pct=10)
    sample(gpu, T12 + timedelta(minutes=1, seconds=10), utilization_gpu_pct=70)
    sample(other, T12 + timedelta(seconds=20), utilization_gpu_pct=90)

    result = gpu_samples_rollup(now=NOW)

    assert result["minute_buckets"] == 3
    assert bucket(gpu, "minute", T12).utilization_gpu_pct == 10
    assert bucket(gpu, "minute", T12 + timedelta(minutes=1)).utilization_gpu_pct == 70
    assert bucket(other, "minute", T12).utilization_gpu_pct == 90


def test_the_current_minute_and_hour_are_not_rolled_up_yet(gpu: Gpu) -> None:
    sample(gpu, NOW - timedelta(seconds=10), utilization_gpu_pct=10)  # 12:10:20, this minute

    result = gpu_samples_rollup(now=NOW)

    assert result == {"minute_buckets": 0, "hour_buckets": 0, "purged": 0}
    assert not GpuSample.objects.exclude(resolution="raw").exists()


def test_minutes_are_averaged_into_hours(gpu: Gpu) -> None:
    for minute, util, ecc, throttled in ((0, 10, 0, False), (30, 20, 5, True), (59, 60, 2, None)):
        for second in (0, 20):
            sample(
                gpu,
                T11 + timedelta(minutes=minute, seconds=second),
                utilization_gpu_pct=util,
                temperature_c=None if minute == 59 else 50,
                ecc_corrected=ecc,
                throttled=throttled,
            )
    sample(gpu, T12 + timedelta(minutes=5), utilization_gpu_pct=99)  # this hour: minutes only

    result = gpu_samples_rollup(now=NOW)

    assert result["minute_buckets"] == 4
    assert result["hour_buckets"] == 1
    hour = bucket(gpu, "hour", T11)
    assert hour.count == 6  # the raw samples behind it
    assert hour.utilization_gpu_pct == 30
    assert hour.temperature_c == 50
    assert hour.ecc_corrected == 5
    assert hour.throttled is True
    assert not GpuSample.objects.filter(resolution="hour", time=T12).exists()
    assert bucket(gpu, "minute", T12 + timedelta(minutes=5)).utilization_gpu_pct == 99


def test_the_rollup_is_idempotent(gpu: Gpu) -> None:
    for minute in range(0, 70, 7):
        sample(gpu, T11 + timedelta(minutes=minute, seconds=3), utilization_gpu_pct=minute)
    sample(gpu, NOW - timedelta(hours=30), utilization_gpu_pct=1)  # purged on the first run
    gpu_samples_rollup(now=NOW)
    after_first = snapshot()
    events = AuditEvent.objects.count()

    again = gpu_samples_rollup(now=NOW)

    assert snapshot() == after_first
    assert again["purged"] == 0
    assert AuditEvent.objects.count() == events  # nothing purged, nothing to audit


def test_a_late_sample_in_the_last_rolled_up_minute_is_counted_on_the_next_run(
    gpu: Gpu,
) -> None:
    last = NOW.replace(second=0) - timedelta(minutes=1)  # 12:09
    sample(gpu, last + timedelta(seconds=10), utilization_gpu_pct=10)
    gpu_samples_rollup(now=NOW)
    assert bucket(gpu, "minute", last).count == 1

    sample(gpu, last + timedelta(seconds=50), utilization_gpu_pct=30)  # committed late
    gpu_samples_rollup(now=NOW + timedelta(minutes=1))

    minute = bucket(gpu, "minute", last)
    assert minute.count == 2
    assert minute.utilization_gpu_pct == 20


def test_samples_past_their_retention_are_purged_and_the_purge_is_audited(gpu: Gpu) -> None:
    old_raw = sample(gpu, NOW - timedelta(hours=25), utilization_gpu_pct=40)
    kept_raw = sample(gpu, NOW - timedelta(hours=23), utilization_gpu_pct=60)
    old_minute = sample(gpu, NOW - timedelta(days=15), "minute", utilization_gpu_pct=1)
    kept_minute = sample(gpu, NOW - timedelta(days=13), "minute", utilization_gpu_pct=2)
    old_hour = sample(gpu, T12 - timedelta(days=401), "hour", utilization_gpu_pct=3)
    kept_hour = sample(gpu, T12 - timedelta(days=399), "hour", utilization_gpu_pct=4)

    result = gpu_samples_rollup(now=NOW)

    gone = {old_raw.pk, old_minute.pk, old_hour.pk}
    assert not GpuSample.objects.filter(pk__in=gone).exists()
    kept = {kept_raw.pk, kept_minute.pk, kept_hour.pk}
    assert set(GpuSample.objects.filter(pk__in=kept).values_list("pk", flat=True)) == kept
    assert result["purged"] == 3
    # The purged raw sample was rolled up first: its minute and hour averages remain.
    old_minute_start = old_raw.time.replace(second=0, microsecond=0)
    assert bucket(gpu, "minute", old_minute_start).utilization_gpu_pct == 40
    assert bucket(gpu, "hour", old_minute_start.replace(minute=0)).utilization_gpu_pct == 40
    [event] = AuditEvent.objects.filter(action="gpu_samples.purge")
    assert event.actor_kind == "system"
    assert event.object_type == "gpu_sample"
    assert event.details["purged"] == 3
    assert event.details["minute_buckets"] == result["minute_buckets"]
    assert event.details["hour_buckets"] == result["hour_buckets"]


def test_samples_just_inside_their_window_are_kept(gpu: Gpu) -> None:
    edge = [
        sample(gpu, NOW - timedelta(hours=24), utilization_gpu_pct=1),
        sample(gpu, NOW - timedelta(days=14), "minute", utilization_gpu_pct=2),
        sample(gpu, NOW - timedelta(days=400), "hour", utilization_gpu_pct=3),
    ]

    result = gpu_samples_rollup(now=NOW)

    assert result["purged"] == 0
    assert GpuSample.objects.filter(pk__in=[s.pk for s in edge]).count() == 3
    assert not AuditEvent.objects.filter(action="gpu_samples.purge").exists()


def test_retention_follows_the_settings(gpu: Gpu, settings: Any) -> None:
    settings.APPLIANCE_GPU_RAW_RETENTION_HOURS = 1
    old = sample(gpu, NOW - timedelta(hours=2), utilization_gpu_pct=5)
    recent = sample(gpu, NOW - timedelta(minutes=30), utilization_gpu_pct=6)

    result = gpu_samples_rollup(now=NOW)

    assert result["purged"] == 1
    assert not GpuSample.objects.filter(pk=old.pk).exists()
    assert GpuSample.objects.filter(pk=recent.pk).exists()

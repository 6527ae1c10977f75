"""The dashboard's figures: fleet health, recent traffic, top applications and the month's cost,
each computed from what the person may see (an app owner's traffic is their own)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.utils import timezone

from appliance.accounts.permissions import Capability, allows
from appliance.core.actors import Actor
from appliance.fleet.choices import DeploymentStatus, EngineState, NodeStatus
from appliance.fleet.models import EngineInstance, Gpu, Node
from appliance.gateway.selectors import usage_record_list
from appliance.routing.reports import cost_report

TRAFFIC_WINDOW = timedelta(minutes=5)
TOP_WINDOW = timedelta(hours=24)
LATENCY_SAMPLE = 5000  # the newest requests the percentiles are taken over


@dataclass
class Fleet:
    nodes_online: int = 0
    nodes_offline: int = 0
    engines: dict[str, int] = field(default_factory=dict)
    gpus: list[dict[str, Any]] = field(default_factory=list)

    @property
    def engines_ready(self) -> int:
        return self.engines.get(EngineState.READY, 0)

    @property
    def engines_failing(self) -> int:
        return sum(
            self.engines.get(state, 0)
            for state in (EngineState.FAILED, EngineState.UNHEALTHY, EngineState.REFUSED)
        )


@dataclass
class Traffic:
    requests_per_s: float
    tokens_per_s: float
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None


def fleet(actor: Actor) -> Fleet | None:
    if not allows(actor, Capability.FLEET_VIEW):
        return None
    nodes = Node.objects.exclude(status=NodeStatus.REVOKED)
    states = (
        EngineInstance.objects.filter(deployment__status=DeploymentStatus.ACTIVE)
        .exclude(state=EngineState.STOPPED)
        .values("state")
        .annotate(n=Count("id"))
    )
    gpus = Gpu.objects.filter(present=True, node__in=nodes).select_related("node")
    return Fleet(
        nodes_online=nodes.filter(status=NodeStatus.ONLINE).count(),
        nodes_offline=nodes.filter(status=NodeStatus.OFFLINE).count(),
        engines={row["state"]: row["n"] for row in states},
        gpus=[_gpu(gpu) for gpu in gpus.order_by("node__name", "index")],
    )


def _gpu(gpu: Gpu) -> dict[str, Any]:
    sample = gpu.last_sample or {}
    used = None
    if gpu.memory_total_bytes and gpu.memory_free_bytes is not None:
        used = 100 * (gpu.memory_total_bytes - gpu.memory_free_bytes) / gpu.memory_total_bytes
    return {
        "node": gpu.node.name,
        "node_id": gpu.node_id,
        "index": gpu.index,
        "name": gpu.name,
        "utilization": sample.get("utilization_gpu_pct"),
        "memory_pct": used,
        "temperature": sample.get("temperature_c"),
        "power": sample.get("power_w"),
        "seen": gpu.last_seen_at,
    }


def traffic(actor: Actor, now: datetime | None = None) -> Traffic:
    now = now or timezone.now()
    records = usage_record_list(actor=actor, since=now - TRAFFIC_WINDOW, until=now)
    totals = records.aggregate(
        n=Count("id"),
        errors=Count("id", filter=Q(status__gte=400)),
        tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
    )
    seconds = TRAFFIC_WINDOW.total_seconds()
    latencies = sorted(
        records.filter(status__lt=400).values_list("latency_ms", flat=True)[:LATENCY_SAMPLE]
    )
    return Traffic(
        requests_per_s=totals["n"] / seconds,
        tokens_per_s=(totals["tokens"] or 0) / seconds,
        error_rate=totals["errors"] / totals["n"] if totals["n"] else None,
        p50_ms=_percentile(latencies, 0.50),
        p95_ms=_percentile(latencies, 0.95),
    )


def _percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def top_applications(
    actor: Actor, now: datetime | None = None, limit: int = 5
) -> list[dict[str, Any]]:
    now = now or timezone.now()
    rows = (
        usage_record_list(actor=actor, since=now - TOP_WINDOW, until=now)
        .order_by()
        .values("application__name")
        .annotate(
            requests=Count("id"),
            tokens=Sum("prompt_tokens") + Sum("completion_tokens"),
            errors=Count("id", filter=Q(status__gte=400)),
        )
        .order_by("-requests", "application__name")[:limit]
    )
    return list(rows)


def month_cost(actor: Actor, now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    report = cost_report(actor=actor, since=start, until=now + timedelta(seconds=1))
    totals = report.totals
    return {
        "currency": report.currency,
        "reference": report.reference,
        "cost": totals["cost"],
        "saving": totals["saving"],
        "reference_cost": totals["reference_cost"],
        "since": start,
        "has_cost": isinstance(totals["cost"], Decimal),
    }

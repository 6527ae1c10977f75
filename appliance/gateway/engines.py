"""Which engines can answer for a model or adapter, and which one to use next.

The table of ready engines is read from the fleet's observed state (what agents report) and kept
for APPLIANCE_GATEWAY_ROUTES_SECONDS; between refreshes, an engine that refuses a connection is
set aside for a few seconds. Among the rest, the one with the fewest requests outstanding from
this process wins.
"""

from __future__ import annotations

import asyncio
import random
import time
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings

from appliance.fleet.choices import DeploymentStatus, DesiredState, EngineState, NodeStatus
from appliance.fleet.heartbeats import engine_api_key, served_adapters
from appliance.fleet.models import EngineInstance
from appliance.registry.choices import EntryStatus

COOLDOWN_SECONDS = 5.0


@dataclass(frozen=True)
class Engine:
    """A ready vLLM engine, and the name it serves the target under."""

    instance: str
    node: str
    deployment: str
    base_url: str
    api_key: str
    served_name: str


@dataclass
class RouteTable:
    """Ready engines per (model id, adapter name), and what the others are doing (for 503s)."""

    ready: dict[tuple[int, str], list[Engine]]
    not_ready: dict[tuple[int, str], Counter[str]]
    loaded_at: float


def route_table_load() -> RouteTable:
    ready: dict[tuple[int, str], list[Engine]] = defaultdict(list)
    not_ready: dict[tuple[int, str], Counter[str]] = defaultdict(Counter)
    instances = (
        EngineInstance.objects.filter(
            desired_state=DesiredState.RUNNING,
            deployment__status=DeploymentStatus.ACTIVE,
            deployment__model__status=EntryStatus.APPROVED,
        )
        .exclude(node__status=NodeStatus.REVOKED)
        .select_related("deployment", "node")
        .prefetch_related("deployment__adapters")
    )
    for instance in instances:
        deployment = instance.deployment
        model_id = deployment.model_id
        adapters = [a.name for a in served_adapters(deployment)]
        usable = (
            instance.state == EngineState.READY
            and instance.port is not None
            and instance.node.status == NodeStatus.ONLINE
        )
        state = instance.state if instance.node.status == NodeStatus.ONLINE else "node offline"
        for adapter in ["", *adapters]:
            key = (model_id, adapter)
            if usable and (not adapter or adapter in instance.loaded_adapters):
                ready[key].append(
                    Engine(
                        instance=str(instance.pk),
                        node=instance.node.name,
                        deployment=deployment.name,
                        base_url=f"http://{instance.node.engine_host}:{instance.port}",
                        api_key=engine_api_key(instance.pk),
                        served_name=adapter or deployment.name,
                    )
                )
            else:
                not_ready[key][state if not usable else "adapter not loaded"] += 1
    return RouteTable(dict(ready), dict(not_ready), time.monotonic())


class Balancer:
    """Least outstanding requests, with engines that just failed set aside."""

    def __init__(self) -> None:
        self.outstanding: Counter[str] = Counter()
        self._cooling: dict[str, float] = {}
        self._table: RouteTable | None = None

    def table_stale(self) -> bool:
        return (
            self._table is None
            or time.monotonic() - self._table.loaded_at > settings.APPLIANCE_GATEWAY_ROUTES_SECONDS
        )

    def set_table(self, table: RouteTable) -> None:
        self._table = table

    def forget_table(self) -> None:
        self._table = None

    def candidates(self, model_id: int, adapter: str) -> list[Engine]:
        assert self._table is not None
        return self._table.ready.get((model_id, adapter), [])

    def why_none(self, model_id: int, adapter: str) -> str:
        """The reason in a 503: nothing deployed, or what the engines are doing instead."""
        assert self._table is not None
        states = self._table.not_ready.get((model_id, adapter))
        if not states:
            return "no deployment serves it"
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return f"none of its engines is ready ({counts})"

    def choose(self, engines: list[Engine], tried: set[str]) -> Engine | None:
        now = time.monotonic()
        left = [e for e in engines if e.instance not in tried]
        if not left:
            return None
        random.shuffle(left)
        return min(
            left,
            key=lambda e: (self._cooling.get(e.instance, 0) > now, self.outstanding[e.instance]),
        )

    def cool(self, engine: Engine) -> None:
        self._cooling[engine.instance] = time.monotonic() + COOLDOWN_SECONDS


balancer = Balancer()
_table_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def table_refresh() -> None:
    """Reread the table of ready engines if it is stale; one reload at a time, the others use its
    result."""
    if balancer.table_stale():
        lock = _table_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        async with lock:
            if balancer.table_stale():
                balancer.set_table(await sync_to_async(route_table_load)())

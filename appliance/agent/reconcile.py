"""Reconciliation decisions, as pure functions: given what the control plane wants and what this
node runs, what to start, stop, restart, load and unload. The runner carries them out."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


def engine_fingerprint(spec: dict[str, Any]) -> str:
    """What an engine was started with, except its adapters (those change at runtime): when this
    changes, the engine must be restarted."""
    relevant = {
        "model": spec["model"]["digest"],
        "device": spec["device"],
        "gpu_indices": spec["gpu_indices"],
        "settings": spec["settings"],
        "deployment": spec["deployment"],
        "api_key": spec["api_key"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...]  # desired, not running
    stop: tuple[str, ...]  # running, no longer desired
    restart: tuple[str, ...]  # running with other settings than desired


def plan(desired: list[dict[str, Any]], running: dict[str, str]) -> Plan:
    """``running`` maps instance id → fingerprint of the engine as it was started."""
    wanted = {spec["instance"]: engine_fingerprint(spec) for spec in desired}
    return Plan(
        start=tuple(sorted(set(wanted) - set(running))),
        stop=tuple(sorted(set(running) - set(wanted))),
        restart=tuple(sorted(i for i in set(wanted) & set(running) if wanted[i] != running[i])),
    )


@dataclass(frozen=True)
class AdapterChanges:
    load: tuple[str, ...]
    unload: tuple[str, ...]


def adapter_changes(desired: list[dict[str, Any]], loaded: set[str]) -> AdapterChanges:
    """Which adapters to load into (and unload from) a ready engine."""
    wanted = {adapter["name"] for adapter in desired}
    return AdapterChanges(
        load=tuple(sorted(wanted - loaded)), unload=tuple(sorted(loaded - wanted))
    )

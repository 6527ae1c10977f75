"""What a node's agent reports on each heartbeat, and the desired state it gets back.

A node only ever sees and changes its own engines: reports about engines placed elsewhere (or
unknown) are ignored exactly like unknown ones, and the desired state holds only its own.
Each change of an engine's state, its restarts and its loaded adapters is an audit event with the
node as the actor.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.errors import NotFound
from appliance.core.secrets import derived_key
from appliance.fleet.choices import DeploymentStatus, DesiredState, EngineState, NodeStatus
from appliance.fleet.models import Deployment, EngineInstance, Node
from appliance.fleet.services import node_actor
from appliance.fleet.telemetry import gpus_record
from appliance.registry.choices import EntryStatus, Storage
from appliance.registry.models import Adapter, Artifact
from appliance.registry.services import artifact_store

OBSERVED_FIELDS = [
    "state",
    "port",
    "pid",
    "engine_version",
    "started_at",
    "last_healthy_at",
    "restarts",
    "last_error",
    "loaded_adapters",
    "metrics",
    "log_tail",
    "last_report_at",
]
FAILING_STATES = {EngineState.FAILED, EngineState.REFUSED, EngineState.UNHEALTHY}
MAX_ERROR_CHARS = 4000
AUDITED_ERROR_CHARS = 300


def engine_api_key(instance_id: Any) -> str:
    """The API key an engine requires on /v1. Derived, not stored: the gateway recomputes it, and
    rotating SECRET_KEY rotates every engine's key."""
    key = derived_key("fleet.engine-api-key")
    return "eng_" + hmac.new(key, str(instance_id).encode(), hashlib.sha256).hexdigest()


def _artifact_ref(name: str, artifact: Artifact | None) -> dict[str, Any]:
    return {
        "name": name,
        "digest": artifact.digest if artifact else "",
        "files": artifact.files if artifact else [],
    }


def _wanted(node: Node) -> QuerySet[EngineInstance]:
    """The node's engines that should run. A model quarantined or retired after the deployment
    was made is no longer served (nor its files handed out)."""
    return (
        EngineInstance.objects.filter(
            node=node,
            desired_state=DesiredState.RUNNING,
            deployment__status=DeploymentStatus.ACTIVE,
            deployment__model__status=EntryStatus.APPROVED,
        )
        .select_related("deployment__model__artifact")
        .prefetch_related("deployment__adapters__artifact")
        .order_by("deployment__name", "replica")
    )


def served_adapters(deployment: Deployment) -> list[Adapter]:
    """A deployment's adapters that may be served: approved ones (quarantine withdraws one)."""
    approved = (a for a in deployment.adapters.all() if a.status == EntryStatus.APPROVED)
    return sorted(approved, key=lambda a: a.name)


def desired_engines(node: Node, wanted: list[EngineInstance] | None = None) -> list[dict[str, Any]]:
    """The engines this node should be running, with everything its agent needs to run them."""
    engines = []
    for instance in _wanted(node) if wanted is None else wanted:
        deployment = instance.deployment
        engines.append(
            {
                "instance": str(instance.pk),
                "deployment": deployment.name,
                "replica": instance.replica,
                "device": deployment.device,
                "gpu_indices": instance.gpu_indices,
                "model": _artifact_ref(deployment.model.name, deployment.model.artifact),
                "adapters": [
                    _artifact_ref(a.name, a.artifact) for a in served_adapters(deployment)
                ],
                "settings": {
                    "max_model_len": deployment.max_model_len,
                    "gpu_memory_utilization": deployment.gpu_memory_utilization,
                    "tensor_parallel_size": deployment.tensor_parallel_size,
                    "dtype": deployment.dtype,
                    "quantization": deployment.quantization,
                    "max_loras": deployment.max_loras,
                    "max_lora_rank": deployment.max_lora_rank,
                    "enable_lora": deployment.model.generates,
                },
                "api_key": engine_api_key(instance.pk),
            }
        )
    return engines


def _audit_engine(
    node: Node, instance: EngineInstance, action: str, details: dict[str, Any], failed: bool = False
) -> None:
    audit_record(
        actor=node_actor(node),
        action=action,
        object_type="engine",
        object_id=str(instance.pk),
        outcome=Outcome.FAILURE if failed else Outcome.SUCCESS,
        details={
            "deployment": instance.deployment.name,
            "replica": instance.replica,
            "node": node.name,
            **details,
        },
    )


def _apply_report(node: Node, instance: EngineInstance, report: dict[str, Any]) -> None:
    state = report["state"]
    error = (report.get("last_error") or "")[:MAX_ERROR_CHARS]
    if state != instance.state:
        failed = state in FAILING_STATES
        details: dict[str, Any] = {"from": instance.state, "to": state}
        if state == EngineState.READY:
            details.update(port=report.get("port"), engine_version=report.get("engine_version"))
        if failed and error.strip():
            first = next(line for line in error.splitlines() if line.strip())
            details["error"] = first.strip()[:AUDITED_ERROR_CHARS]
        _audit_engine(node, instance, f"engine.{state}", details, failed=failed)
    restarts = int(report.get("restarts") or 0)
    if restarts > instance.restarts:
        _audit_engine(node, instance, "engine.restart", {"restarts": restarts})
    # A node can only say it loaded adapters of this deployment: other names are not recorded.
    known = {a.name for a in instance.deployment.adapters.all()} | set(instance.loaded_adapters)
    before = set(instance.loaded_adapters)
    after = set(report.get("loaded_adapters") or []) & known
    for name in sorted(after - before):
        _audit_engine(node, instance, "engine.adapter_load", {"adapter": name})
    for name in sorted(before - after) if state != EngineState.STOPPED else []:
        _audit_engine(node, instance, "engine.adapter_unload", {"adapter": name})
    instance.state = state
    instance.port = report.get("port")
    instance.pid = report.get("pid")
    instance.engine_version = (report.get("engine_version") or "")[:50]
    instance.started_at = report.get("started_at")
    instance.last_healthy_at = report.get("last_healthy_at")
    instance.restarts = max(restarts, instance.restarts)
    instance.last_error = error
    instance.loaded_adapters = sorted(after)
    instance.metrics = report.get("metrics") or {}
    instance.log_tail = list(report.get("log_tail") or [])
    instance.last_report_at = timezone.now()
    # Only what the agent observes: desired_state belongs to the operator, and a report read
    # before a removal committed must not write the old desired state back.
    instance.save(update_fields=OBSERVED_FIELDS)


def node_heartbeat(
    *, node: Node, report: dict[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """Record what the node reports (GPUs, engines) and answer with what it should run."""
    now = now or timezone.now()
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if node.status == NodeStatus.OFFLINE:
            audit_record(
                actor=node_actor(node),
                action="node.online",
                object_type="node",
                object_id=node.pk,
                details={"name": node.name},
            )
            node.status = NodeStatus.ONLINE
        node.last_heartbeat_at = now
        node.agent_version = (report.get("agent_version") or node.agent_version)[:50]
        node.hostname = (report.get("hostname") or node.hostname)[:255]
        node.engine_host = report.get("engine_host") or node.engine_host
        # Why NVML reported no GPUs (no driver, driver not loaded), for the operator to see.
        node.platform = {
            **(report.get("platform") or node.platform),
            "gpu_error": report.get("gpu_error"),
        }
        node.save()
        gpus_record(node=node, gpus=report.get("gpus") or [], now=now)

        reports = {str(e["instance"]): e for e in report.get("engines") or []}
        own = (
            EngineInstance.objects.select_related("deployment")
            .prefetch_related("deployment__adapters")
            .filter(node=node)
        )
        for instance in own.filter(pk__in=list(reports)):
            _apply_report(node, instance, reports[str(instance.pk)])
        # Engines the node should not run and no longer reports have stopped.
        wanted = list(_wanted(node))
        wanted_ids = {str(instance.pk) for instance in wanted}
        for instance in own.exclude(state=EngineState.STOPPED):
            if str(instance.pk) not in reports and str(instance.pk) not in wanted_ids:
                _apply_report(
                    node,
                    instance,
                    {"state": EngineState.STOPPED, "restarts": instance.restarts},
                )
        return {
            "node": {"id": node.pk, "name": node.name, "status": node.status},
            "heartbeat_seconds": settings.APPLIANCE_HEARTBEAT_SECONDS,
            "engines": desired_engines(node, wanted),
        }


def node_blob(*, node: Node, sha256: str) -> tuple[Path, int]:
    """The file with this sha256 if an engine this node should run needs it; a blob of anything
    else, another node's deployments included, is NotFound."""
    for instance in _wanted(node):
        deployment = instance.deployment
        for entry in (deployment.model, *served_adapters(deployment)):
            artifact = entry.artifact
            for file in artifact.files if artifact else []:
                if artifact and file["sha256"] == sha256:
                    return _blob_location(artifact, file), int(file["size"])
    raise NotFound("No such file for this node.")


def blob_served(*, node: Node, sha256: str, size: int, offset: int) -> None:
    """Record that a node was handed a file (resumed downloads too): which weights went where."""
    audit_record(
        actor=node_actor(node),
        action="artifact.download",
        object_type="blob",
        object_id=sha256,
        details={"size": size, "offset": offset},
    )


def _blob_location(artifact: Artifact, file: dict[str, Any]) -> Path:
    if artifact.storage == Storage.COPY:
        return artifact_store().blob_path(file["sha256"])
    return Path(artifact.location) / file["path"]

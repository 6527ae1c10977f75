"""Creating, changing and removing deployments, and placing their engines.

A deployment is desired state. Creating one places each replica on a node (and GPUs) at once, or
refuses with the reasons; the node's agent then starts the engines. Changing the adapters is
done by the agent at runtime, without a restart. Removing a deployment asks its engines to stop.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.errors import Conflict, ValidationFailed
from appliance.fleet.choices import (
    DTYPES,
    LORA_RANKS,
    QUANTIZATIONS,
    TENSOR_PARALLEL_SIZES,
    DeploymentStatus,
    DesiredState,
    Device,
    EngineState,
    NodeStatus,
)
from appliance.fleet.models import Deployment, EngineInstance, Gpu, Node
from appliance.fleet.placement import (
    GpuRequest,
    GpuRoom,
    NoCapacity,
    NodeLoad,
    Slot,
    place_on_cpus,
    place_on_gpus,
)
from appliance.fleet.services import engines_stop
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
MAX_REPLICAS = 16
# Engines whose memory NVML already counts as used.
RUNNING_STATES = {EngineState.STARTING, EngineState.READY, EngineState.UNHEALTHY}


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, fields={field: [message]})


def _check_settings(
    *,
    name: str,
    model: BaseModel,
    device: str,
    replicas: int,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    max_model_len: int | None,
    dtype: str,
    quantization: str,
    max_loras: int,
    max_lora_rank: int,
    gpu_indices: list[int],
    node: Node | None,
) -> None:
    if not NAME.match(name):
        raise _invalid(
            "name", "Lower-case letters, digits, '.', '_' and '-', starting with a letter or digit."
        )
    if Deployment.objects.filter(name=name).exists():
        raise Conflict(f"The name {name!r} is already taken.", code="duplicate_name")
    if model.status != EntryStatus.APPROVED:
        raise Conflict(f"Model {model.name} is {model.status}, not approved.", code="not_approved")
    if device not in Device.values:
        raise _invalid("device", f"One of {', '.join(Device.values)}.")
    if not 1 <= replicas <= MAX_REPLICAS:
        raise _invalid("replicas", f"Between 1 and {MAX_REPLICAS}.")
    if tensor_parallel_size not in TENSOR_PARALLEL_SIZES:
        raise _invalid("tensor_parallel_size", f"One of {TENSOR_PARALLEL_SIZES}.")
    if device == Device.CPU and (tensor_parallel_size != 1 or gpu_indices):
        raise _invalid("device", "A CPU engine uses no GPUs and no tensor parallelism.")
    if not 0.05 <= gpu_memory_utilization <= 0.98:
        raise _invalid("gpu_memory_utilization", "Between 0.05 and 0.98.")
    if max_model_len is not None and (
        max_model_len < 16 or (model.context_length and max_model_len > model.context_length)
    ):
        raise _invalid(
            "max_model_len", f"Between 16 and the model's context ({model.context_length})."
        )
    if dtype not in DTYPES:
        raise _invalid("dtype", f"One of {', '.join(DTYPES)}.")
    if quantization not in QUANTIZATIONS:
        raise _invalid("quantization", f"One of {', '.join(q or '(none)' for q in QUANTIZATIONS)}.")
    if not 1 <= max_loras <= 64:
        raise _invalid("max_loras", "Between 1 and 64.")
    if max_lora_rank not in LORA_RANKS:
        raise _invalid("max_lora_rank", f"One of {LORA_RANKS}.")
    if gpu_indices and node is None:
        raise _invalid("gpu_indices", "Choose the node too when choosing GPUs.")
    if len(set(gpu_indices)) != len(gpu_indices):
        raise _invalid("gpu_indices", "Each GPU once.")


def _check_adapters(adapters: Iterable[Adapter], model: BaseModel, max_lora_rank: int) -> None:
    adapters = list(adapters)
    if adapters and not model.generates:
        raise ValidationFailed(
            f"{model.name} ({model.architecture}) is an embedding model; it takes no adapters.",
            code="adapters_not_supported",
            fields={"adapter_ids": ["Not for an embedding model."]},
        )
    for adapter in adapters:
        if adapter.status != EntryStatus.APPROVED:
            raise Conflict(
                f"Adapter {adapter.name} is {adapter.status}, not approved.", code="not_approved"
            )
        if adapter.base_model_id != model.pk:
            raise ValidationFailed(
                f"Adapter {adapter.name} is for another base model.",
                code="wrong_base_model",
                fields={"adapter_ids": [f"{adapter.name} is not an adapter of {model.name}."]},
            )
        if adapter.rank > max_lora_rank:
            raise ValidationFailed(
                f"Adapter {adapter.name} has rank {adapter.rank}, above max_lora_rank.",
                fields={"max_lora_rank": [f"At least {adapter.rank} for {adapter.name}."]},
            )


def _gpu_rooms(nodes: list[Node]) -> list[GpuRoom]:
    """The GPUs of these nodes with what running engines already reserve on each."""
    reserved: dict[tuple[int, int], int] = defaultdict(int)
    started: dict[tuple[int, int], int] = defaultdict(int)
    for instance in EngineInstance.objects.filter(
        node__in=nodes, desired_state=DesiredState.RUNNING
    ):
        for index in instance.gpu_indices:
            reserved[(instance.node_id, index)] += instance.reserved_bytes_per_gpu
            if instance.state in RUNNING_STATES:
                started[(instance.node_id, index)] += instance.reserved_bytes_per_gpu
    names = {n.pk: n.name for n in nodes}
    rooms = []
    for gpu in Gpu.objects.filter(node__in=nodes, present=True, memory_total_bytes__isnull=False):
        total = gpu.memory_total_bytes or 0
        used = None if gpu.memory_free_bytes is None else total - gpu.memory_free_bytes
        rooms.append(
            GpuRoom(
                node_id=gpu.node_id,
                node_name=names[gpu.node_id],
                index=gpu.index,
                total_bytes=total,
                used_bytes=used,
                reserved_bytes=reserved[(gpu.node_id, gpu.index)],
                started_bytes=started[(gpu.node_id, gpu.index)],
            )
        )
    return rooms


def _place(
    *,
    device: str,
    node: Node | None,
    replicas: int,
    tensor_parallel_size: int,
    gpu_memory_utilization: float,
    weight_bytes: int,
    gpu_indices: list[int],
) -> list[Slot]:
    if node is not None and node.status != NodeStatus.ONLINE:
        raise Conflict(f"Node {node.name} is {node.status}.", code="node_unavailable")
    # Locked, so two deployments created at once cannot both take the last free GPU.
    candidates = list(
        Node.objects.select_for_update()
        .filter(status=NodeStatus.ONLINE)
        .filter(Q(pk=node.pk) if node else Q())
        .order_by("name")
    )
    try:
        if device == Device.CPU:
            loads = [
                NodeLoad(
                    node_id=n.pk,
                    node_name=n.name,
                    engines=n.instances.filter(desired_state=DesiredState.RUNNING).count(),
                )
                for n in candidates
            ]
            return place_on_cpus(replicas, loads)
        request = GpuRequest(
            replicas=replicas,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            weight_bytes=weight_bytes,
            gpu_indices=tuple(gpu_indices),
        )
        return place_on_gpus(request, _gpu_rooms(candidates))
    except NoCapacity as refusal:
        raise Conflict(
            f"No room for this deployment: {refusal}.",
            code="no_capacity",
            fields={"placement": refusal.reasons},
        ) from refusal


def deployment_create(
    *,
    actor: Actor,
    name: str,
    model: BaseModel,
    adapters: list[Adapter] | None = None,
    device: str = Device.GPU,
    node: Node | None = None,
    gpu_indices: list[int] | None = None,
    replicas: int = 1,
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel_size: int = 1,
    dtype: str = "auto",
    quantization: str = "",
    max_loras: int = 4,
    max_lora_rank: int = 16,
    description: str = "",
) -> Deployment:
    """Ask for a model to be served; places every replica or refuses without writing anything."""
    require(actor, Capability.FLEET_MANAGE)
    adapters = adapters or []
    gpu_indices = gpu_indices or []
    name = name.strip()
    _check_settings(
        name=name,
        model=model,
        device=device,
        replicas=replicas,
        tensor_parallel_size=tensor_parallel_size,
        gpu_memory_utilization=gpu_memory_utilization,
        max_model_len=max_model_len,
        dtype=dtype,
        quantization=quantization,
        max_loras=max_loras,
        max_lora_rank=max_lora_rank,
        gpu_indices=gpu_indices,
        node=node,
    )
    _check_adapters(adapters, model, max_lora_rank)
    with transaction.atomic():
        slots = _place(
            device=device,
            node=node,
            replicas=replicas,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            weight_bytes=model.artifact.total_bytes if model.artifact else 0,
            gpu_indices=gpu_indices,
        )
        try:
            deployment = Deployment.objects.create(
                name=name,
                description=description,
                model=model,
                device=device,
                node=node,
                gpu_indices=gpu_indices,
                replicas=replicas,
                max_model_len=max_model_len,
                gpu_memory_utilization=gpu_memory_utilization,
                tensor_parallel_size=tensor_parallel_size,
                dtype=dtype,
                quantization=quantization,
                max_loras=max_loras,
                max_lora_rank=max_lora_rank,
                created_by=actor.user,
            )
        except IntegrityError as clash:  # a concurrent request took the name after the check
            raise Conflict(f"The name {name!r} is already taken.", code="duplicate_name") from clash
        deployment.adapters.set(adapters)
        for replica, slot in enumerate(slots):
            EngineInstance.objects.create(
                deployment=deployment,
                replica=replica,
                node_id=slot.node_id,
                gpu_indices=list(slot.gpu_indices),
                reserved_bytes_per_gpu=slot.reserved_bytes_per_gpu,
            )
        audit_record(
            actor=actor,
            action="deployment.create",
            object_type="deployment",
            object_id=deployment.pk,
            details={
                **deployment_settings(deployment),
                "placement": [{"node_id": s.node_id, "gpus": list(s.gpu_indices)} for s in slots],
            },
        )
    return deployment


def deployment_settings(deployment: Deployment) -> dict[str, Any]:
    """What was asked for, as recorded in audit events."""
    return {
        "name": deployment.name,
        "model": deployment.model.name,
        "model_digest": deployment.model.artifact.digest if deployment.model.artifact else "",
        "adapters": sorted(a.name for a in deployment.adapters.all()),
        "device": deployment.device,
        "node_id": deployment.node_id,
        "gpu_indices": deployment.gpu_indices,
        "replicas": deployment.replicas,
        "max_model_len": deployment.max_model_len,
        "gpu_memory_utilization": deployment.gpu_memory_utilization,
        "tensor_parallel_size": deployment.tensor_parallel_size,
        "dtype": deployment.dtype,
        "quantization": deployment.quantization,
        "max_loras": deployment.max_loras,
        "max_lora_rank": deployment.max_lora_rank,
    }


def deployment_set_adapters(
    *, actor: Actor, deployment: Deployment, adapters: list[Adapter]
) -> Deployment:
    """Change which adapters a deployment serves; agents load and unload them at runtime."""
    require(actor, Capability.FLEET_MANAGE)
    if deployment.status != DeploymentStatus.ACTIVE:
        raise Conflict("This deployment was removed.", code="removed")
    _check_adapters(adapters, deployment.model, deployment.max_lora_rank)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        before = sorted(a.name for a in deployment.adapters.all())
        after = sorted(a.name for a in adapters)
        if before != after:
            deployment.adapters.set(adapters)
            deployment.save(update_fields=["updated_at"])
            audit_record(
                actor=actor,
                action="deployment.adapters",
                object_type="deployment",
                object_id=deployment.pk,
                details={
                    "name": deployment.name,
                    "added": sorted(set(after) - set(before)),
                    "removed": sorted(set(before) - set(after)),
                },
            )
    return deployment


def deployment_remove(*, actor: Actor, deployment: Deployment) -> Deployment:
    """Stop serving: the deployment is kept for the record and its engines are stopped."""
    require(actor, Capability.FLEET_MANAGE)
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.status == DeploymentStatus.REMOVED:
            return deployment
        deployment.status = DeploymentStatus.REMOVED
        deployment.removed_at = timezone.now()
        deployment.save(update_fields=["status", "removed_at", "updated_at"])
        stopped = engines_stop(deployment.instances.all())
        audit_record(
            actor=actor,
            action="deployment.remove",
            object_type="deployment",
            object_id=deployment.pk,
            details={"name": deployment.name, "engines_stopped": stopped},
        )
    return deployment

"""GPU machines (nodes) and their GPUs, what operators ask them to run (deployments, desired) and
what their agents report running (engine instances, observed)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from appliance.fleet.choices import (
    DeploymentStatus,
    DesiredState,
    Device,
    EngineState,
    NodeStatus,
    SampleResolution,
)
from appliance.registry.models import Adapter, BaseModel


class Node(models.Model):
    """A machine running the node agent. It authenticates with its own credential (``nod_…``),
    stored as prefix + sha256 like API tokens."""

    name = models.CharField(max_length=100, unique=True)
    hostname = models.CharField(max_length=255, blank=True)
    status = models.CharField(max_length=16, choices=NodeStatus.choices, default=NodeStatus.ONLINE)
    credential_prefix = models.CharField(max_length=12, unique=True)
    credential_hash = models.CharField(max_length=64)
    agent_version = models.CharField(max_length=50, blank=True)
    platform = models.JSONField(default=dict)  # os, cpu count, memory, vLLM version
    engine_host = models.CharField(max_length=255, default="127.0.0.1")  # where its engines listen
    enrolled_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EnrollmentToken(models.Model):
    """A one-time, expiring secret that lets one machine enroll as a node. Stored hashed."""

    name = models.CharField(max_length=100)  # what it is for, e.g. the machine to enroll
    prefix = models.CharField(max_length=12, unique=True)
    token_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.SET_NULL, related_name="enrollment_tokens"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def state(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.used_at:
            return "used"
        if self.expires_at <= timezone.now():
            return "expired"
        return "usable"


class Gpu(models.Model):
    """One GPU of a node as NVML last reported it. ``present`` turns false when it disappears
    from the node's inventory (removed, or lost to an XID error)."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveIntegerField()
    uuid = models.CharField(max_length=64)
    name = models.CharField(max_length=100, blank=True)
    memory_total_bytes = models.BigIntegerField(null=True, blank=True)
    memory_free_bytes = models.BigIntegerField(null=True, blank=True)
    last_sample = models.JSONField(default=dict)  # the full NVML reading (nulls kept as nulls)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    present = models.BooleanField(default=True)

    class Meta:
        ordering = ["node", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "uuid"], name="fleet_gpu_unique")]

    def __str__(self) -> str:
        return f"{self.node.name} GPU {self.index}"


class GpuSample(models.Model):
    """A point (raw) or an average over a minute or an hour of one GPU's readings. A reading that
    NVML could not take stays null; aggregates ignore nulls."""

    gpu = models.ForeignKey(Gpu, on_delete=models.CASCADE, related_name="samples")
    resolution = models.CharField(max_length=8, choices=SampleResolution.choices)
    time = models.DateTimeField()  # the reading's time, or the start of the bucket
    count = models.PositiveIntegerField(default=1)  # raw samples behind an aggregate
    memory_used_bytes = models.BigIntegerField(null=True)
    utilization_gpu_pct = models.FloatField(null=True)
    utilization_memory_pct = models.FloatField(null=True)
    temperature_c = models.FloatField(null=True)
    power_w = models.FloatField(null=True)
    ecc_corrected = models.BigIntegerField(null=True)  # the highest count in the bucket
    ecc_uncorrected = models.BigIntegerField(null=True)
    throttled = models.BooleanField(null=True)  # any throttling other than idle in the bucket

    class Meta:
        ordering = ["gpu", "resolution", "time"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu", "resolution", "time"], name="fleet_gpusample_unique"
            )
        ]
        indexes = [models.Index(fields=["resolution", "time"], name="fleet_sample_res_time")]

    def __str__(self) -> str:
        return f"{self.gpu_id} {self.resolution} {self.time.isoformat()}"


class Deployment(models.Model):
    """What an operator asked for: a model (with adapters) served by vLLM with these settings,
    on this node or GPUs or wherever placement finds room, in ``replicas`` engines."""

    name = models.CharField(max_length=63, unique=True)  # the served model name
    description = models.TextField(blank=True)
    model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="deployments")
    adapters = models.ManyToManyField(Adapter, blank=True, related_name="deployments")
    device = models.CharField(max_length=8, choices=Device.choices, default=Device.GPU)
    node = models.ForeignKey(
        Node, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )  # None: any node with room
    gpu_indices = models.JSONField(default=list)  # [] = any GPUs of the node
    replicas = models.PositiveIntegerField(default=1)
    max_model_len = models.PositiveIntegerField(null=True, blank=True)
    gpu_memory_utilization = models.FloatField(default=0.9)
    tensor_parallel_size = models.PositiveIntegerField(default=1)
    dtype = models.CharField(max_length=16, default="auto")
    quantization = models.CharField(max_length=32, blank=True)
    max_loras = models.PositiveIntegerField(default=4)
    max_lora_rank = models.PositiveIntegerField(default=16)
    status = models.CharField(
        max_length=16, choices=DeploymentStatus.choices, default=DeploymentStatus.ACTIVE
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EngineInstance(models.Model):
    """One vLLM process of a deployment replica on a node: placed by the control plane, then
    reported by the node's agent. The id is a UUID so one node cannot guess another's engines."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, related_name="instances")
    replica = models.PositiveIntegerField()
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="instances")
    gpu_indices = models.JSONField(default=list)
    reserved_bytes_per_gpu = models.BigIntegerField(default=0)
    desired_state = models.CharField(
        max_length=16, choices=DesiredState.choices, default=DesiredState.RUNNING
    )
    state = models.CharField(
        max_length=16, choices=EngineState.choices, default=EngineState.PENDING
    )
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    engine_version = models.CharField(max_length=50, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    last_healthy_at = models.DateTimeField(null=True, blank=True)
    last_report_at = models.DateTimeField(null=True, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    loaded_adapters = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)  # the latest scrape of the engine's /metrics
    log_tail = models.JSONField(default=list)  # the engine's last output lines, as reported
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment", "replica", "created_at"]

    def __str__(self) -> str:
        return f"{self.deployment.name}#{self.replica} on {self.node.name}"

"""Request and response bodies of the fleet's management API (/api/v1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Field, ModelSchema, Schema

from appliance.api.base import InSchema
from appliance.fleet.choices import DeploymentStatus, Device, NodeStatus, SampleResolution
from appliance.fleet.models import Deployment, EngineInstance, EnrollmentToken, Gpu, GpuSample, Node


class EnrollmentTokenIn(InSchema):
    name: str = Field(min_length=1, max_length=100, description="The machine it is for.")
    expires_in_hours: int | None = Field(None, ge=1, le=24 * 7)


class EnrollmentTokenOut(ModelSchema):
    state: str
    created_by: str | None = Field(None, alias="created_by.username")
    node_id: int | None = None

    class Meta:
        model = EnrollmentToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "used_at", "revoked_at"]


class EnrollmentTokenCreatedOut(Schema):
    token: EnrollmentTokenOut
    secret: str = Field(description="Shown once: give it to `appliance-agent enroll`.")


class GpuOut(ModelSchema):
    last_sample: dict[str, Any]

    class Meta:
        model = Gpu
        fields = [
            "id",
            "index",
            "uuid",
            "name",
            "memory_total_bytes",
            "memory_free_bytes",
            "last_seen_at",
            "present",
        ]


class NodeOut(ModelSchema):
    gpus: list[GpuOut]
    platform: dict[str, Any]

    class Meta:
        model = Node
        fields = [
            "id",
            "name",
            "hostname",
            "status",
            "agent_version",
            "engine_host",
            "enrolled_at",
            "last_heartbeat_at",
            "revoked_at",
        ]


class NodeFilter(Schema):
    status: NodeStatus | None = None


class GpuSampleOut(ModelSchema):
    class Meta:
        model = GpuSample
        fields = [
            "time",
            "resolution",
            "count",
            "memory_used_bytes",
            "utilization_gpu_pct",
            "utilization_memory_pct",
            "temperature_c",
            "power_w",
            "ecc_corrected",
            "ecc_uncorrected",
            "throttled",
        ]


class SampleFilter(Schema):
    resolution: SampleResolution = SampleResolution.RAW
    since: datetime | None = None


class EngineOut(ModelSchema):
    """What the node's agent last reported about one engine (observed state)."""

    id: UUID
    node_id: int
    node_name: str = Field(alias="node.name")
    loaded_adapters: list[str]
    metrics: dict[str, Any]

    class Meta:
        model = EngineInstance
        fields = [
            "replica",
            "gpu_indices",
            "desired_state",
            "state",
            "port",
            "pid",
            "engine_version",
            "started_at",
            "last_healthy_at",
            "last_report_at",
            "restarts",
            "last_error",
        ]


class DeploymentOut(ModelSchema):
    """Desired state (the settings) beside observed state (``engines``)."""

    model_id: int
    model_name: str = Field(alias="model.name")
    node_id: int | None = None
    adapters: list[str]
    engines: list[EngineOut]
    created_by: str | None = Field(None, alias="created_by.username")

    class Meta:
        model = Deployment
        fields = [
            "id",
            "name",
            "description",
            "device",
            "gpu_indices",
            "replicas",
            "max_model_len",
            "gpu_memory_utilization",
            "tensor_parallel_size",
            "dtype",
            "quantization",
            "max_loras",
            "max_lora_rank",
            "status",
            "created_at",
            "updated_at",
            "removed_at",
        ]

    @staticmethod
    def resolve_adapters(obj: Deployment) -> list[str]:
        return sorted(a.name for a in obj.adapters.all())

    @staticmethod
    def resolve_engines(obj: Deployment) -> list[EngineInstance]:
        return list(obj.instances.all())


class DeploymentIn(InSchema):
    name: str = Field(min_length=1, max_length=63, description="The served model name.")
    model_id: int
    adapter_ids: list[int] = Field(default_factory=list, max_length=64)
    device: Device = Device.GPU
    node_id: int | None = Field(None, description="Run on this node; any node with room if null.")
    gpu_indices: list[int] = Field(default_factory=list, max_length=8)  # checked by placement
    replicas: int = Field(1, ge=1, le=16)
    max_model_len: int | None = Field(None, ge=16, le=2**31 - 1)
    gpu_memory_utilization: float = Field(0.9, ge=0.05, le=0.98)
    tensor_parallel_size: int = Field(1, ge=1, le=8)
    dtype: str = "auto"
    quantization: str = ""
    max_loras: int = Field(4, ge=1, le=64)
    max_lora_rank: int = Field(16, ge=1, le=512)
    description: str = Field("", max_length=2000)


class DeploymentPatchIn(InSchema):
    adapter_ids: list[int] = Field(
        max_length=64, description="The adapters to serve; loaded and unloaded without restarts."
    )


class DeploymentFilter(Schema):
    status: DeploymentStatus | None = None

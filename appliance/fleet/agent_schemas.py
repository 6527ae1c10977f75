"""Bodies of the agent API (/api/agent/v1): what agents send and what they get back."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from ninja import Field, Schema
from pydantic import ConfigDict, field_validator

from appliance.api.base import InSchema
from appliance.fleet.choices import EngineState


class EnrollIn(InSchema):
    token: str = Field(min_length=1, max_length=200)
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    hostname: str = Field("", max_length=255)
    agent_version: str = Field("", max_length=50)
    platform: dict[str, Any] = Field(default_factory=dict)


class EnrollOut(Schema):
    node_id: int
    name: str
    credential: str = Field(description="The node's credential, shown once; keep it mode 0600.")
    heartbeat_seconds: int


BIG = 2**63 - 1  # what a BigIntegerField holds
INT = 2**31 - 1  # what a PositiveIntegerField holds


class GpuReport(Schema):
    """One GPU's NVML reading (appliance.agent.nvml.GpuSample); unknown readings are null."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    index: int = Field(ge=0, le=255)
    uuid: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=100)
    memory_total_bytes: int | None = Field(None, ge=0, le=BIG)
    memory_used_bytes: int | None = Field(None, ge=0, le=BIG)
    memory_free_bytes: int | None = Field(None, ge=0, le=BIG)
    utilization_gpu_pct: float | None = None
    utilization_memory_pct: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    ecc_corrected: int | None = Field(None, ge=0, le=BIG)
    ecc_uncorrected: int | None = Field(None, ge=0, le=BIG)
    throttle_reasons: list[str] | None = None


class EngineReport(InSchema):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    instance: UUID
    state: EngineState
    port: int | None = Field(None, ge=1, le=65535)
    pid: int | None = Field(None, ge=1, le=INT)
    engine_version: str = Field("", max_length=50)
    started_at: datetime | None = None
    last_healthy_at: datetime | None = None
    restarts: int = Field(0, ge=0, le=INT)
    last_error: str = Field("", max_length=8000)
    loaded_adapters: list[str] = Field(default_factory=list, max_length=256)
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    log_tail: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=50, description="The engine's last output lines."
    )


class HeartbeatIn(InSchema):
    agent_version: str = Field("", max_length=50)
    hostname: str = Field("", max_length=255)
    engine_host: str | None = Field(None, description="The private address engines listen on.")
    platform: dict[str, Any] = Field(default_factory=dict)
    gpus: list[GpuReport] = Field(default_factory=list, max_length=64)
    gpu_error: str | None = Field(None, max_length=500)
    engines: list[EngineReport] = Field(default_factory=list, max_length=256)

    @field_validator("engine_host")
    @classmethod
    def _private(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            address = ipaddress.ip_address(value)
        except ValueError as exc:
            raise ValueError("not an IP address") from exc
        if address.is_unspecified or not (address.is_loopback or address.is_private):
            raise ValueError("engines listen on loopback or private addresses only")
        return value


class FileRef(Schema):
    path: str
    size: int
    sha256: str


class ArtifactRef(Schema):
    name: str
    digest: str
    files: list[FileRef]


class EngineSettings(Schema):
    max_model_len: int | None
    gpu_memory_utilization: float
    tensor_parallel_size: int
    dtype: str
    quantization: str
    max_loras: int
    max_lora_rank: int
    enable_lora: bool = True  # false for pooling (embedding) models, which take no adapters


class DesiredEngine(Schema):
    instance: UUID
    deployment: str
    replica: int
    device: str
    gpu_indices: list[int]
    model: ArtifactRef
    adapters: list[ArtifactRef]
    settings: EngineSettings
    api_key: str = Field(description="What the engine must require on /v1 (--api-key).")


class NodeRef(Schema):
    id: int
    name: str
    status: str


class HeartbeatOut(Schema):
    node: NodeRef
    heartbeat_seconds: int
    engines: list[DesiredEngine]

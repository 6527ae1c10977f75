"""Life cycles of nodes, deployments and engines, and the allowed vLLM settings."""

from __future__ import annotations

from django.db import models


class NodeStatus(models.TextChoices):
    ONLINE = "online"  # heartbeating
    OFFLINE = "offline"  # missed too many heartbeats; its engines may still be serving
    REVOKED = "revoked"  # credential revoked; may never call the agent API again


class Device(models.TextChoices):
    GPU = "gpu"
    CPU = "cpu"  # the CPU build of vLLM: demo and tests


class DeploymentStatus(models.TextChoices):
    ACTIVE = "active"
    REMOVED = "removed"  # kept for the record; its engines are stopped


class DesiredState(models.TextChoices):
    RUNNING = "running"
    STOPPED = "stopped"


class EngineState(models.TextChoices):
    PENDING = "pending"  # placed; the agent has not reported it yet
    DOWNLOADING = "downloading"  # fetching and verifying artifacts
    STARTING = "starting"  # process started, /health not yet 200
    READY = "ready"
    UNHEALTHY = "unhealthy"  # running but /health fails
    FAILED = "failed"  # exited or failed to start; the agent retries with backoff
    REFUSED = "refused"  # artifacts failed verification; never started on them
    STOPPED = "stopped"


class SampleResolution(models.TextChoices):
    RAW = "raw"
    MINUTE = "minute"
    HOUR = "hour"


DTYPES = ("auto", "bfloat16", "float16", "float32")
QUANTIZATIONS = ("", "awq", "gptq", "fp8", "bitsandbytes", "compressed-tensors")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's --max-lora-rank accepts
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)

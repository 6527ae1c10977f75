"""Reads of the fleet: nodes, GPUs and their history, deployments with their engines."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Prefetch, QuerySet

from appliance.accounts.permissions import Capability, require
from appliance.core.actors import Actor
from appliance.fleet.models import Deployment, EngineInstance, EnrollmentToken, GpuSample, Node


def node_list(*, actor: Actor, status: str | None = None) -> QuerySet[Node]:
    require(actor, Capability.FLEET_VIEW)
    nodes = Node.objects.prefetch_related("gpus")
    if status:
        nodes = nodes.filter(status=status)
    return nodes.order_by("name")


def enrollment_token_list(*, actor: Actor) -> QuerySet[EnrollmentToken]:
    require(actor, Capability.FLEET_MANAGE)
    return EnrollmentToken.objects.select_related("created_by", "node").order_by(
        "-created_at", "-id"
    )


def gpu_samples(
    *, actor: Actor, node: Node, gpu_id: int, resolution: str, since: datetime | None
) -> QuerySet[GpuSample]:
    require(actor, Capability.FLEET_VIEW)
    samples = GpuSample.objects.filter(gpu__node=node, gpu_id=gpu_id, resolution=resolution)
    if since:
        samples = samples.filter(time__gte=since)
    return samples.order_by("-time")


def deployment_list(*, actor: Actor, status: str | None = None) -> QuerySet[Deployment]:
    require(actor, Capability.FLEET_VIEW)
    deployments = Deployment.objects.select_related("model", "node", "created_by").prefetch_related(
        "adapters",
        Prefetch(
            "instances",
            queryset=EngineInstance.objects.select_related("node").order_by(
                "replica", "created_at"
            ),
        ),
    )
    if status:
        deployments = deployments.filter(status=status)
    return deployments.order_by("name")

"""Fleet API (/api/v1): enrollment tokens, nodes and their GPU history, deployments."""

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.pagination import paginate

from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.core.errors import ValidationFailed
from appliance.fleet import deployments as deployment_services
from appliance.fleet import selectors, services
from appliance.fleet.models import Deployment, EnrollmentToken, Node
from appliance.fleet.schemas import (
    DeploymentFilter,
    DeploymentIn,
    DeploymentOut,
    DeploymentPatchIn,
    EnrollmentTokenCreatedOut,
    EnrollmentTokenIn,
    EnrollmentTokenOut,
    GpuSampleOut,
    NodeFilter,
    NodeOut,
    SampleFilter,
)
from appliance.registry import selectors as registry_selectors
from appliance.registry.models import Adapter

enrollment_router = Router(tags=["nodes"])
nodes_router = Router(tags=["nodes"])
deployments_router = Router(tags=["deployments"])

READ_ERRORS = error_responses(401, 403, 404)
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


@enrollment_router.get("", response={200: list[EnrollmentTokenOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_enrollment_tokens(request: HttpRequest) -> Any:
    return selectors.enrollment_token_list(actor=actor_of(request))


@enrollment_router.post(
    "", response={201: EnrollmentTokenCreatedOut, **error_responses(401, 403, 422)}
)
def create_enrollment_token(request: HttpRequest, payload: EnrollmentTokenIn) -> Status[Any]:
    """A one-time token for `appliance-agent enroll`; the token is in this answer only."""
    token, secret = services.enrollment_token_create(actor=actor_of(request), **payload.dict())
    return Status(201, {"token": token, "secret": secret})


@enrollment_router.post("/{token_id}/revoke", response={200: EnrollmentTokenOut, **WRITE_ERRORS})
def revoke_enrollment_token(request: HttpRequest, token_id: int) -> EnrollmentToken:
    actor = actor_of(request)
    token = get_or_404(selectors.enrollment_token_list(actor=actor), "token", pk=token_id)
    return services.enrollment_token_revoke(actor=actor, token=token)


def _node(request: HttpRequest, node_id: int) -> Node:
    return get_or_404(selectors.node_list(actor=actor_of(request)), "node", pk=node_id)


@nodes_router.get("", response={200: list[NodeOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_nodes(request: HttpRequest, filters: Query[NodeFilter]) -> Any:
    return selectors.node_list(actor=actor_of(request), status=filters.status)


@nodes_router.get("/{node_id}", response={200: NodeOut, **READ_ERRORS})
def get_node(request: HttpRequest, node_id: int) -> Node:
    return _node(request, node_id)


@nodes_router.post("/{node_id}/revoke", response={200: NodeOut, **WRITE_ERRORS})
def revoke_node(request: HttpRequest, node_id: int) -> Node:
    """Revoke the node's credential; its agent is refused from the next call and stops engines."""
    return services.node_revoke(actor=actor_of(request), node=_node(request, node_id))


@nodes_router.get(
    "/{node_id}/gpus/{gpu_id}/samples", response={200: list[GpuSampleOut], **READ_ERRORS}
)
@paginate(OrderedPagination)
def list_gpu_samples(
    request: HttpRequest, node_id: int, gpu_id: int, filters: Query[SampleFilter]
) -> Any:
    """A GPU's history, newest first: raw samples, or minute or hour averages."""
    node = _node(request, node_id)
    get_or_404(node.gpus.all(), "GPU", pk=gpu_id)
    return selectors.gpu_samples(
        actor=actor_of(request),
        node=node,
        gpu_id=gpu_id,
        resolution=filters.resolution,
        since=filters.since,
    )


def _deployment(request: HttpRequest, deployment_id: int) -> Deployment:
    return get_or_404(
        selectors.deployment_list(actor=actor_of(request)), "deployment", pk=deployment_id
    )


def _adapters(request: HttpRequest, adapter_ids: list[int]) -> list[Adapter]:
    found = list(
        registry_selectors.adapter_list(actor=actor_of(request)).filter(pk__in=adapter_ids)
    )
    missing = sorted(set(adapter_ids) - {a.pk for a in found})
    if missing:
        raise ValidationFailed(
            "Unknown adapters.", fields={"adapter_ids": [f"No adapter {i}." for i in missing]}
        )
    return found


@deployments_router.get("", response={200: list[DeploymentOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_deployments(request: HttpRequest, filters: Query[DeploymentFilter]) -> Any:
    return selectors.deployment_list(actor=actor_of(request), status=filters.status)


@deployments_router.post("", response={201: DeploymentOut, **WRITE_ERRORS})
def create_deployment(request: HttpRequest, payload: DeploymentIn) -> Status[Any]:
    """Serve an approved model (with approved adapters). Every replica is placed now, or the
    request is refused with the reasons (409 `no_capacity`)."""
    actor = actor_of(request)
    data = payload.dict()
    model = get_or_404(registry_selectors.model_list(actor=actor), "model", pk=data.pop("model_id"))
    adapters = _adapters(request, data.pop("adapter_ids"))
    node_id = data.pop("node_id")
    node = get_or_404(selectors.node_list(actor=actor), "node", pk=node_id) if node_id else None
    deployment = deployment_services.deployment_create(
        actor=actor, model=model, adapters=adapters, node=node, **data
    )
    return Status(201, _deployment(request, deployment.pk))


@deployments_router.get("/{deployment_id}", response={200: DeploymentOut, **READ_ERRORS})
def get_deployment(request: HttpRequest, deployment_id: int) -> Deployment:
    return _deployment(request, deployment_id)


@deployments_router.patch("/{deployment_id}", response={200: DeploymentOut, **WRITE_ERRORS})
def update_deployment(
    request: HttpRequest, deployment_id: int, payload: DeploymentPatchIn
) -> Deployment:
    """Change the adapters served; engines load and unload them without restarting."""
    deployment = _deployment(request, deployment_id)
    deployment_services.deployment_set_adapters(
        actor=actor_of(request),
        deployment=deployment,
        adapters=_adapters(request, payload.adapter_ids),
    )
    return _deployment(request, deployment_id)


@deployments_router.delete("/{deployment_id}", response={200: DeploymentOut, **WRITE_ERRORS})
def remove_deployment(request: HttpRequest, deployment_id: int) -> Deployment:
    """Stop serving; the deployment stays on record as `removed` and its engines are stopped."""
    deployment_services.deployment_remove(
        actor=actor_of(request), deployment=_deployment(request, deployment_id)
    )
    return _deployment(request, deployment_id)

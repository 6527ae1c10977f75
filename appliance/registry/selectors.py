"""Reads of the registry."""

from __future__ import annotations

from django.db.models import QuerySet

from appliance.accounts.permissions import Capability, require
from appliance.core.actors import Actor
from appliance.registry.models import Adapter, BaseModel


def model_list(
    *, actor: Actor, status: str | None = None, q: str | None = None
) -> QuerySet[BaseModel]:
    require(actor, Capability.REGISTRY_VIEW)
    models = BaseModel.objects.select_related("artifact", "imported_by", "approved_by")
    if status:
        models = models.filter(status=status)
    if q:
        models = models.filter(name__icontains=q)
    return models.order_by("name")


def adapter_list(
    *,
    actor: Actor,
    status: str | None = None,
    q: str | None = None,
    base_model_id: int | None = None,
) -> QuerySet[Adapter]:
    require(actor, Capability.REGISTRY_VIEW)
    adapters = Adapter.objects.select_related(
        "artifact", "imported_by", "approved_by", "base_model"
    )
    if status:
        adapters = adapters.filter(status=status)
    if q:
        adapters = adapters.filter(name__icontains=q)
    if base_model_id is not None:
        adapters = adapters.filter(base_model_id=base_model_id)
    return adapters.order_by("name")

"""What a key may call by name: a model or an adapter of it, with the digests its audit events
name. Routes (appliance.routing.plans) resolve to these too."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.access.models import Grant
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel


@dataclass(frozen=True)
class Target:
    """A model or adapter a key may call, by the name clients use (the registry name)."""

    name: str
    model_id: int
    model_name: str
    model_digest: str
    adapter_name: str = ""
    adapter_digest: str = ""
    created: int = 0

    @property
    def parent(self) -> str | None:
        return self.model_name if self.adapter_name else None


def target_of(model: BaseModel, adapter: Adapter | None) -> Target:
    entry = adapter or model
    return Target(
        name=entry.name,
        model_id=model.pk,
        model_name=model.name,
        model_digest=model.artifact.digest if model.artifact else "",
        adapter_name=adapter.name if adapter else "",
        adapter_digest=adapter.artifact.digest if adapter and adapter.artifact else "",
        created=int(entry.imported_at.timestamp()),
    )


def approved(model: BaseModel, adapter: Adapter | None) -> bool:
    """Quarantining or retiring a model or adapter withdraws it at once."""
    entry = adapter or model
    return model.status == EntryStatus.APPROVED and entry.status == EntryStatus.APPROVED


def granted_targets(application_id: int) -> dict[str, Target]:
    """Models and adapters granted directly (route grants are resolved by the routing plans)."""
    targets: dict[str, Target] = {}
    grants = Grant.objects.filter(application_id=application_id, model__isnull=False)
    for grant in grants.select_related("model__artifact", "adapter__artifact"):
        assert grant.model is not None
        if approved(grant.model, grant.adapter):
            target = target_of(grant.model, grant.adapter)
            targets[target.name] = target
    return targets

"""Routing fixtures: task classes, routes built through the services, an embedding model, and
the gateway fixtures (uvicorn in a thread, fake engines) for requests through a route."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.access import services as access
from appliance.access.models import Application
from appliance.accounts.models import User
from appliance.registry.models import BaseModel
from appliance.routing import latency, semantic, services
from appliance.routing.models import Route, TaskClass
from appliance.routing.services import RouteDefinition, RuleSpec, TierSpec
from tests.access.conftest import (  # noqa: F401
    approve,
    approved_adapters,
    approved_model,
    import_model,
    oscar,
)
from tests.conftest import actor
from tests.fleet.conftest import encoder, enroll  # noqa: F401
from tests.gateway.conftest import (  # noqa: F401
    _fresh_gateway_state,
    application,
    fake_engines,
    gateway,
    serve,
)


@pytest.fixture(autouse=True)
def _fresh_routing_state() -> None:
    semantic.forget()
    latency.forget()


@pytest.fixture
def large_model(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    """A second approved text model (the larger tier of a chain)."""
    model = import_model(admin2, "large-model", import_root, django_capture_on_commit_callbacks)
    return approve(admin, model)


@pytest.fixture
def task_class(admin: User) -> Callable[..., TaskClass]:
    """``task_class(name, examples=[...])``: the class, created if it does not exist."""

    def get(name: str, examples: list[str] | None = None) -> TaskClass:
        found = TaskClass.objects.filter(name=name).first()
        return found or services.task_class_create(
            actor=actor(admin), name=name, examples=examples or []
        )

    return get


Tier = tuple[str, Any]  # (task class, model | adapter | route)


def tier_spec(task_class: str, target: Any, timeout_ms: int | None = None) -> TierSpec:
    if isinstance(target, Route):
        return TierSpec(task_class, route_id=target.pk, timeout_ms=timeout_ms)
    if isinstance(target, BaseModel):
        return TierSpec(task_class, model_id=target.pk, timeout_ms=timeout_ms)
    return TierSpec(
        task_class, model_id=target.base_model_id, adapter_id=target.pk, timeout_ms=timeout_ms
    )


@pytest.fixture
def route(admin: User, task_class: Callable[..., TaskClass]) -> Callable[..., Route]:
    """``route(name, tiers=[(class, target[, timeout_ms]), ...], rules=[(kind, class, value)],
    default_class="general", **options)``, saved through the service."""

    def build(
        name: str = "assistant",
        tiers: list[tuple[Any, ...]] | None = None,
        rules: list[tuple[str, str, str]] | None = None,
        default_class: str = "general",
        **options: Any,
    ) -> Route:
        rule_specs = [RuleSpec(kind, cls, value) for kind, cls, value in rules or []]
        tier_specs = [tier_spec(*tier) for tier in tiers or []]
        for cls in {
            default_class,
            *(r.task_class for r in rule_specs),
            *(t.task_class for t in tier_specs),
        }:
            task_class(cls)
        return services.route_create(
            actor=actor(admin),
            definition=RouteDefinition(
                name=name,
                default_class=default_class,
                rules=rule_specs,
                tiers=tier_specs,
                **options,
            ),
        )

    return build


@pytest.fixture
def routed(
    admin: User,
    application: Callable[..., tuple[Application, str]],  # noqa: F811
) -> Callable[..., tuple[Application, str]]:
    """``routed(route, name=...)``: an application granted only the route, and its key."""

    def build(route: Route, name: str = "letters") -> tuple[Application, str]:
        app, key = application(name)
        access.grant_create(actor=actor(admin), application=app, route=route)
        return app, key

    return build

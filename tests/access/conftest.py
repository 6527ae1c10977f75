"""Access fixtures: a second app owner (oscar), registry entries to grant, applications of owen and
oscar, and a snapshot of everything a refused request must leave as it was."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, TypeVar

import pytest

from appliance.access import services
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from appliance.registry import services as registry
from appliance.registry.models import Adapter, BaseModel
from tests.conftest import actor, make_user
from tests.support import write_adapter_dir, write_model_dir


@pytest.fixture
def oscar(db: None) -> User:
    """A second application owner, who must never see or touch owen's applications."""
    return make_user("oscar", Role.APP_OWNER)


# --- registry entries --------------------------------------------------------------------------


def import_model(importer: User, name: str, root: Path, capture: Any) -> BaseModel:
    """A pending base model imported (and hashed) by ``importer``."""
    with capture(execute=True):
        model, _ = registry.model_import(
            actor=actor(importer), name=name, path=str(write_model_dir(root / name))
        )
    model.refresh_from_db()
    assert model.status == "pending"
    return model


def import_adapter(importer: User, name: str, base: BaseModel, root: Path, capture: Any) -> Adapter:
    """A pending adapter of ``base`` imported (and hashed) by ``importer``."""
    with capture(execute=True):
        adapter, _ = registry.adapter_import(
            actor=actor(importer),
            name=name,
            base_model=base,
            path=str(write_adapter_dir(root / name)),
        )
    adapter.refresh_from_db()
    assert adapter.status == "pending"
    return adapter


EntryT = TypeVar("EntryT", BaseModel, Adapter)


def approve(approver: User, entry: EntryT) -> EntryT:
    """The entry, approved by ``approver`` (who must not be its importer)."""
    registry.entry_approve(actor=actor(approver), entry=entry)
    return entry


@pytest.fixture
def approved_model(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    """A base model imported by bob and approved by alice (four eyes)."""
    model = import_model(admin2, "base-model", import_root, django_capture_on_commit_callbacks)
    return approve(admin, model)


@pytest.fixture
def approved_adapters(
    approved_model: BaseModel,
    admin: User,
    admin2: User,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> list[Adapter]:
    """Two approved adapters of ``approved_model``."""
    capture = django_capture_on_commit_callbacks
    return [
        approve(admin, import_adapter(admin2, name, approved_model, import_root, capture))
        for name in ("triage", "billing")
    ]


@pytest.fixture
def pending_model(
    admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> BaseModel:
    """A base model waiting for a second admin's approval."""
    return import_model(admin2, "pending-model", import_root, django_capture_on_commit_callbacks)


@pytest.fixture
def pending_adapter(
    approved_model: BaseModel,
    admin2: User,
    import_root: Path,
    django_capture_on_commit_callbacks: Any,
) -> Adapter:
    """An adapter of ``approved_model`` waiting for approval."""
    return import_adapter(
        admin2, "pending-lora", approved_model, import_root, django_capture_on_commit_callbacks
    )


@pytest.fixture
def foreign_adapter(
    admin: User, admin2: User, import_root: Path, django_capture_on_commit_callbacks: Any
) -> Adapter:
    """An approved adapter of another approved base model."""
    capture = django_capture_on_commit_callbacks
    other = approve(admin, import_model(admin2, "other-base", import_root, capture))
    return approve(admin, import_adapter(admin2, "other-lora", other, import_root, capture))


# --- applications ------------------------------------------------------------------------------


@pytest.fixture
def owens_app(admin: User, app_owner: User) -> Application:
    """owen's application, created for him by an admin."""
    return services.application_create(
        actor=actor(admin), name="discharge-letters", owner=app_owner, department="cardiology"
    )


@pytest.fixture
def oscars_app(admin: User, oscar: User) -> Application:
    """oscar's application, which owen must not be able to see."""
    return services.application_create(
        actor=actor(admin), name="fraud-screen", owner=oscar, department="finance"
    )


# --- what a refusal must leave alone -------------------------------------------------------------


def access_state() -> dict[str, Any]:
    """Every application, key and grant as stored, and the audit actions so far. Denials are
    audited and api_as() audits the token it makes, so those two actions are not counted."""
    return {
        "applications": list(Application.objects.order_by("pk").values()),
        "keys": list(ApiKey.objects.order_by("pk").values()),
        "grants": list(Grant.objects.order_by("pk").values()),
        "audit": Counter(
            AuditEvent.objects.exclude(
                action__in=["permission.denied", "token.create"]
            ).values_list("action", flat=True)
        ),
    }


def assert_refused(response: Any, status: int, code: str, before: dict[str, Any]) -> None:
    """The answer has this status and error code, and nothing in access changed."""
    assert response.status_code == status, response.data
    assert response.data["code"] == code, response.data
    assert access_state() == before

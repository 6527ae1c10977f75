"""The demo application that `make run` sets up for trying the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from appliance.access import services
from appliance.access.demo import demo_application_key
from appliance.access.models import Application
from appliance.audit.models import AuditEvent
from tests.access.conftest import approve, import_adapter, import_model
from tests.conftest import actor


def test_it_creates_the_application_its_grants_and_a_key_once(
    admin: Any, admin2: Any, import_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    capture = django_capture_on_commit_callbacks
    model = approve(admin, import_model(admin2, "demo-llama", import_root, capture))
    approve(admin, import_adapter(admin2, "demo-triage", model, import_root, capture))

    key = demo_application_key()

    application = Application.objects.get(name="demo-app")
    assert application.owner == admin
    assert sorted(str(g) for g in application.grants.all()) == [
        "demo-app → demo-llama",
        "demo-app → demo-triage",
    ]
    assert key is not None and services.api_key_authenticate(plaintext=key) is not None
    assert demo_application_key(known_key=key) == key  # a working key is kept
    assert application.keys.count() == 1
    assert AuditEvent.objects.filter(action="application.create", actor_kind="system").exists()


def test_a_revoked_key_is_replaced(
    admin: Any, admin2: Any, import_root: Path, django_capture_on_commit_callbacks: Any
) -> None:
    approve(
        admin, import_model(admin2, "demo-llama", import_root, django_capture_on_commit_callbacks)
    )
    key = demo_application_key()
    services.api_key_revoke(actor=actor(admin), key=Application.objects.get().keys.get())

    replacement = demo_application_key(known_key=key)

    assert replacement not in (None, key)
    assert Application.objects.get().keys.count() == 2


def test_nothing_is_made_without_the_demo_model(admin: Any) -> None:
    assert demo_application_key() is None
    assert not Application.objects.exists()

"""The demo application of ``make run``: granted the generated demo model and its adapters, with
a key a new user can call the gateway with right away."""

from __future__ import annotations

from django.db import transaction

from appliance.access import services
from appliance.access.models import Application
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.core.actors import system_actor
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel

DEMO_APPLICATION = "demo-app"
DEMO_MODEL = "demo-llama"


def demo_application_key(*, known_key: str = "") -> str | None:
    """A usable key of the demo application: ``known_key`` if it still works, else a new one
    (creating the application and its grants the first time). None without an admin or the
    approved demo model."""
    if known_key and services.api_key_authenticate(plaintext=known_key) is not None:
        return known_key
    owner = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk").first()
    model = BaseModel.objects.filter(name=DEMO_MODEL, status=EntryStatus.APPROVED).first()
    if owner is None or model is None:
        return None
    actor = system_actor("run_appliance")
    with transaction.atomic():
        application = Application.objects.filter(name=DEMO_APPLICATION).first()
        if application is None:
            application = services.application_create(
                actor=actor,
                name=DEMO_APPLICATION,
                owner=owner,
                department="IT",
                description="Created by `make run` to try the gateway; disable it in production.",
            )
            services.grant_create(actor=actor, application=application, model=model)
            adapters = Adapter.objects.filter(base_model=model, status=EntryStatus.APPROVED)
            for adapter in adapters.order_by("name"):
                services.grant_create(
                    actor=actor, application=application, model=model, adapter=adapter
                )
        _, plaintext = services.api_key_create(
            actor=actor, application=application, name="make run"
        )
    return plaintext

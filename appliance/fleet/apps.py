from __future__ import annotations

from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "appliance.fleet"
    label = "fleet"

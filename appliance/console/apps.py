from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "appliance.console"
    label = "console"
    verbose_name = "Web console"

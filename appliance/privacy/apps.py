from __future__ import annotations

from django.apps import AppConfig


class PrivacyConfig(AppConfig):
    name = "appliance.privacy"
    label = "privacy"
    verbose_name = "Stored content and erasure"

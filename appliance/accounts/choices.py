"""Roles. What each may do is decided in services (appliance.accounts.permissions)."""

from __future__ import annotations

from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Administrator"  # everything
    OPERATOR = "operator", "Operator"  # models, adapters, nodes, deployments
    AUDITOR = "auditor", "Auditor"  # reads everything, exports audit, changes nothing
    APP_OWNER = "app_owner", "Application owner"  # only their own applications and keys

"""People who use the console and API, and their personal API tokens."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models

from appliance.accounts.choices import Role


class User(AbstractUser):
    """A person. Their ``role`` decides what services let them do; Django's staff and superuser
    flags are not used for that (there is no Django admin site)."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.APP_OWNER)
    full_name = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="accounts_user_role_valid"
            )
        ]


class ApiToken(models.Model):
    """A personal API token for scripts. Only its prefix and SHA-256 hash are stored; the token is
    shown once at creation. It acts with its owner's role."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

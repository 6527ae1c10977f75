"""Internal applications that call the gateway, their API keys, and the models they may use."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from appliance.access.choices import ApplicationStatus, DataClassification, DataPolicy
from appliance.registry.models import Adapter, BaseModel


class Application(models.Model):
    """An internal application (a discharge-letter tool, a fraud screen) and its limits. A null
    limit means none."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="applications"
    )
    department = models.CharField(max_length=100, blank=True)
    data_classification = models.CharField(
        max_length=16, choices=DataClassification.choices, default=DataClassification.INTERNAL
    )
    data_policy = models.CharField(
        max_length=16, choices=DataPolicy.choices, default=DataPolicy.NO_CONTENT
    )
    status = models.CharField(
        max_length=16, choices=ApplicationStatus.choices, default=ApplicationStatus.ACTIVE
    )
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    monthly_token_budget = models.BigIntegerField(null=True, blank=True)
    max_concurrent_requests = models.PositiveIntegerField(null=True, blank=True)
    max_tokens_per_request = models.PositiveIntegerField(null=True, blank=True)
    # Raised whenever grants, limits, classification, data policy or status change; every
    # inference audit event names the version it was decided under (EU AI Act Art. 12).
    policy_version = models.PositiveIntegerField(default=1)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ApiKey(models.Model):
    """An application's key for the gateway (``apk_…``): shown once, stored as prefix + sha256."""

    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True)
    key_hash = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.application.name}: {self.name} ({self.prefix})"


class Grant(models.Model):
    """An application may use a base model (``adapter`` null), one adapter of it, or a route (a
    virtual model; what the route selects is reachable through the route only)."""

    application = models.ForeignKey(Application, on_delete=models.CASCADE, related_name="grants")
    model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.PROTECT, related_name="grants"
    )
    adapter = models.ForeignKey(
        Adapter, null=True, blank=True, on_delete=models.PROTECT, related_name="grants"
    )
    route = models.ForeignKey(
        "routing.Route", null=True, blank=True, on_delete=models.PROTECT, related_name="grants"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["application", "model", "adapter", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "model"],
                condition=Q(adapter__isnull=True),
                name="access_grant_model_once",
            ),
            models.UniqueConstraint(
                fields=["application", "adapter"],
                condition=Q(adapter__isnull=False),
                name="access_grant_adapter_once",
            ),
            models.UniqueConstraint(
                fields=["application", "route"],
                condition=Q(route__isnull=False),
                name="access_grant_route_once",
            ),
            models.CheckConstraint(
                condition=(Q(model__isnull=False) & Q(route__isnull=True))
                | (Q(model__isnull=True) & Q(adapter__isnull=True) & Q(route__isnull=False)),
                name="access_grant_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.application.name} → {self.route or self.adapter or self.model}"

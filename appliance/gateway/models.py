"""What the gateway did: one usage record per request and hourly/daily rollups of them.

Usage records hold counts and timings, never prompt or completion text. Names are stored beside
ids so the record still reads correctly after a model, key or node is renamed or removed.
"""

from __future__ import annotations

from django.db import models

from appliance.access.models import ApiKey, Application
from appliance.gateway.choices import Endpoint, UsagePeriod


class UsageRecord(models.Model):
    """One request through the gateway: who, which model and engine, tokens, timings, status."""

    time = models.DateTimeField()  # when the request arrived
    request_id = models.CharField(max_length=64, blank=True)
    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+")
    endpoint = models.CharField(max_length=24, choices=Endpoint.choices)
    model = models.CharField(max_length=100)  # the registry model's name
    adapter = models.CharField(max_length=100, blank=True)
    node = models.CharField(max_length=100, blank=True)
    engine = models.CharField(max_length=36, blank=True)  # the engine instance id
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()  # the HTTP status the client got
    error_code = models.CharField(max_length=40, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField()  # request in → last byte out
    ttft_ms = models.FloatField(null=True)  # request in → first streamed token out
    attempts = models.PositiveSmallIntegerField(default=1)  # engines tried
    deployment = models.CharField(max_length=63, blank=True)  # whose cost model prices it
    # Requests to a route: the route, the task class it decided and why (a rule's position, a
    # similarity, a hint; never prompt text), and how many tiers failed before the answer.
    route = models.CharField(max_length=63, blank=True)
    task_class = models.CharField(max_length=40, blank=True)
    route_reason = models.CharField(max_length=100, blank=True)
    fallbacks = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            models.Index(fields=["time"], name="gateway_usage_time"),
            models.Index(fields=["application", "time"], name="gateway_usage_app_time"),
        ]

    def __str__(self) -> str:
        return f"{self.time.isoformat()} {self.application_id} {self.model} {self.status}"


class UsageRollup(models.Model):
    """Usage of one application, model, adapter, deployment, route and task class over one hour
    or day (UTC), recomputed from
    the records by a periodic job, so reports never scan the raw table."""

    period = models.CharField(max_length=8, choices=UsagePeriod.choices)
    start = models.DateTimeField()
    application = models.ForeignKey(Application, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=100)
    adapter = models.CharField(max_length=100, blank=True)
    deployment = models.CharField(max_length=63, blank=True)
    route = models.CharField(max_length=63, blank=True)
    task_class = models.CharField(max_length=40, blank=True)
    requests = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)  # status ≥ 400, throttled included
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    ttft_ms_sum = models.FloatField(default=0)
    ttft_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["period", "start", "application", "model", "adapter"]
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "period",
                    "start",
                    "application",
                    "model",
                    "adapter",
                    "deployment",
                    "route",
                    "task_class",
                ],
                name="gateway_rollup_unique",
            )
        ]

    def __str__(self) -> str:
        return f"{self.period} {self.start.isoformat()} {self.application_id} {self.model}"

"""Routes (virtual model names that apps call like models), the task classes they tell apart,
their rules and fallback tiers; what deployments cost; reference prices; evaluations."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from appliance.fleet.models import Deployment
from appliance.registry.models import Adapter, BaseModel
from appliance.routing.choices import CostKind, EvaluationStatus, RouteStatus, RuleKind

MONEY_DIGITS, MONEY_PLACES = 14, 4


class TaskClass(models.Model):
    """A kind of request (extraction, code, summarisation…) that routes send to the model best at
    it; its example prompts (written by the admin, not taken from traffic) teach the semantic
    classifier."""

    name = models.SlugField(max_length=40, unique=True)
    description = models.TextField(blank=True)
    examples = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Route(models.Model):
    """A virtual model: classify each request into a task class, then try that class's tiers in
    order. Granted to applications like a model; what it selects is reachable only through it."""

    name = models.CharField(max_length=63, unique=True)
    description = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=RouteStatus.choices, default=RouteStatus.ACTIVE
    )
    default_class = models.ForeignKey(TaskClass, on_delete=models.PROTECT, related_name="+")
    # Set: requests no rule decides are embedded by this (appliance-served) model and given the
    # class of the nearest example prompt, if it is at least this similar.
    embedding_model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    semantic_threshold = models.FloatField(default=0.3)
    # Targets dearer than this (per million tokens, in APPLIANCE_CURRENCY) are never chosen.
    cost_ceiling = models.DecimalField(
        null=True, blank=True, max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )
    version = models.PositiveIntegerField(default=1)  # raised on every change
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RouteRule(models.Model):
    """One ordered rule of a route: if it matches, the request has this task class."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=RuleKind.choices)
    value = models.CharField(max_length=500, blank=True)
    task_class = models.ForeignKey(TaskClass, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["route", "position"]
        constraints = [
            models.UniqueConstraint(fields=["route", "position"], name="routing_rule_position")
        ]

    def __str__(self) -> str:
        return f"{self.route.name} #{self.position} {self.kind} → {self.task_class.name}"


class RouteTier(models.Model):
    """One step of a task class's fallback chain: a model, an adapter of it, or another route
    (escalate to that route's chain for the same class)."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="tiers")
    task_class = models.ForeignKey(TaskClass, on_delete=models.PROTECT, related_name="+")
    position = models.PositiveIntegerField()
    model = models.ForeignKey(
        BaseModel, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    adapter = models.ForeignKey(
        Adapter, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    fallback_route = models.ForeignKey(
        Route, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    timeout_ms = models.PositiveIntegerField(null=True, blank=True)  # escalate after this long

    class Meta:
        ordering = ["route", "task_class", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["route", "task_class", "position"], name="routing_tier_position"
            ),
            models.CheckConstraint(
                condition=(Q(model__isnull=False) & Q(fallback_route__isnull=True))
                | (
                    Q(model__isnull=True)
                    & Q(adapter__isnull=True)
                    & Q(fallback_route__isnull=False)
                ),
                name="routing_tier_one_target",
            ),
        ]

    def __str__(self) -> str:
        target = self.fallback_route or self.adapter or self.model
        return f"{self.route.name}/{self.task_class.name} #{self.position} → {target}"


class ReferencePrice(models.Model):
    """What a hosted API would charge for the same tokens, for the savings report (list prices
    the admin types in; nothing is fetched)."""

    name = models.CharField(max_length=100, unique=True)
    prompt_per_million = models.DecimalField(max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES)
    completion_per_million = models.DecimalField(
        max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )
    is_default = models.BooleanField(default=False)
    notes = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"],
                condition=Q(is_default=True),
                name="routing_price_one_default",
            )
        ]

    def __str__(self) -> str:
        return self.name


class CostModel(models.Model):
    """What a deployment costs: its GPUs' hourly price amortised over the tokens it served, or a
    set price per million tokens. ``effective_per_million`` is the measured figure routes'
    ceilings and evaluations use, refreshed hourly."""

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, related_name="cost_model"
    )
    kind = models.CharField(max_length=16, choices=CostKind.choices)
    gpu_hour_price = models.DecimalField(
        null=True, blank=True, max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )  # per GPU and hour
    gpu_count = models.PositiveIntegerField(null=True, blank=True)  # None: from the deployment
    price_per_million = models.DecimalField(
        null=True, blank=True, max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )
    effective_per_million = models.DecimalField(
        null=True, blank=True, max_digits=MONEY_DIGITS, decimal_places=MONEY_PLACES
    )
    measured_tokens = models.BigIntegerField(default=0)
    measured_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["deployment"]

    def __str__(self) -> str:
        return f"{self.deployment.name}: {self.kind}"


class EvaluationSet(models.Model):
    """Prompts with expected answers and a scorer each, uploaded as JSONL by an admin; kept
    encrypted, since they are the customer's own data."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # [{"messages", "expected", "scorer"}] as JSON, wrapped by the master key (evaluations.py)
    items_sealed = models.TextField()
    item_count = models.PositiveIntegerField(default=0)
    sha256 = models.CharField(max_length=64)  # of the uploaded text, for the record
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Evaluation(models.Model):
    """A run of a set against two or more candidates (models, adapters, routes) through the
    gateway, as a background job with progress; its report names the smallest candidate that
    reaches ``target_score``. Answers are scored in memory and never stored."""

    evaluation_set = models.ForeignKey(
        EvaluationSet, on_delete=models.PROTECT, related_name="evaluations"
    )
    candidates = models.JSONField(default=list)  # names, as apps call them
    target_score = models.FloatField()
    max_tokens = models.PositiveIntegerField(default=64)
    status = models.CharField(
        max_length=16, choices=EvaluationStatus.choices, default=EvaluationStatus.QUEUED
    )
    progress = models.FloatField(default=0)
    error = models.TextField(blank=True)
    report = models.JSONField(default=dict)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.evaluation_set.name} #{self.pk} ({self.status})"

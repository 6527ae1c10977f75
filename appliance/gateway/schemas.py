"""Response bodies and filters of the usage API."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, ModelSchema, Schema

from appliance.gateway.choices import UsagePeriod
from appliance.gateway.models import UsageRecord, UsageRollup


class UsageRollupOut(ModelSchema):
    application: str = Field(alias="application.name")
    application_id: int
    total_tokens: int
    latency_ms_avg: float | None
    ttft_ms_avg: float | None

    class Meta:
        model = UsageRollup
        fields = [
            "period",
            "start",
            "model",
            "adapter",
            "deployment",
            "route",
            "task_class",
            "requests",
            "errors",
            "prompt_tokens",
            "completion_tokens",
        ]

    @staticmethod
    def resolve_total_tokens(obj: UsageRollup) -> int:
        return obj.prompt_tokens + obj.completion_tokens

    @staticmethod
    def resolve_latency_ms_avg(obj: UsageRollup) -> float | None:
        return round(obj.latency_ms_sum / obj.requests, 1) if obj.requests else None

    @staticmethod
    def resolve_ttft_ms_avg(obj: UsageRollup) -> float | None:
        return round(obj.ttft_ms_sum / obj.ttft_count, 1) if obj.ttft_count else None


class UsageRecordOut(ModelSchema):
    application: str = Field(alias="application.name")
    application_id: int
    api_key_prefix: str = Field(alias="api_key.prefix")

    class Meta:
        model = UsageRecord
        fields = [
            "id",
            "time",
            "request_id",
            "endpoint",
            "model",
            "adapter",
            "node",
            "engine",
            "stream",
            "status",
            "error_code",
            "prompt_tokens",
            "completion_tokens",
            "latency_ms",
            "ttft_ms",
            "attempts",
            "deployment",
            "route",
            "task_class",
            "route_reason",
            "fallbacks",
        ]


class RollupFilter(Schema):
    period: UsagePeriod = UsagePeriod.DAY
    since: datetime | None = Field(None, description="Buckets starting at or after this time.")
    until: datetime | None = Field(None, description="Buckets starting before this time.")
    application_id: int | None = None
    model: str | None = Field(None, max_length=100)
    adapter: str | None = Field(None, max_length=100, description="'' for the base model only.")
    route: str | None = Field(None, max_length=63, description="'' for requests to a model.")
    task_class: str | None = Field(None, max_length=40)


class RecordFilter(Schema):
    since: datetime | None = None
    until: datetime | None = None
    application_id: int | None = None
    model: str | None = Field(None, max_length=100)
    status: int | None = Field(None, ge=100, le=599)
    route: str | None = Field(None, max_length=63)
    task_class: str | None = Field(None, max_length=40)

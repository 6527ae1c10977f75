"""Request and response bodies of the applications API."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, ModelSchema, Schema

from appliance.access.choices import ApplicationStatus, DataClassification, DataPolicy
from appliance.access.models import ApiKey, Application, Grant
from appliance.api.base import InSchema

LIMIT = Field(None, ge=1, le=2**31 - 1)


class ApplicationOut(ModelSchema):
    owner: str = Field(alias="owner.username")
    owner_id: int

    class Meta:
        model = Application
        fields = [
            "id",
            "name",
            "description",
            "department",
            "data_classification",
            "data_policy",
            "status",
            "requests_per_minute",
            "tokens_per_minute",
            "monthly_token_budget",
            "max_concurrent_requests",
            "max_tokens_per_request",
            "created_at",
            "updated_at",
        ]


class Limits(InSchema):
    requests_per_minute: int | None = LIMIT
    tokens_per_minute: int | None = LIMIT
    monthly_token_budget: int | None = Field(None, ge=1, le=2**62)
    max_concurrent_requests: int | None = LIMIT
    max_tokens_per_request: int | None = LIMIT


class ApplicationIn(Limits):
    name: str = Field(min_length=1, max_length=100)
    owner_id: int | None = Field(None, description="Default: you.")
    description: str = Field("", max_length=2000)
    department: str = Field("", max_length=100)
    data_classification: DataClassification = DataClassification.INTERNAL
    data_policy: DataPolicy = DataPolicy.NO_CONTENT


class ApplicationPatchIn(Limits):
    """Only the fields sent are changed; a limit sent as null is removed."""

    owner_id: int | None = None
    description: str | None = Field(None, max_length=2000)
    department: str | None = Field(None, max_length=100)
    data_classification: DataClassification | None = None
    data_policy: DataPolicy | None = None
    status: ApplicationStatus | None = None


class ApiKeyOut(ModelSchema):
    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "created_at", "expires_at", "revoked_at", "last_used_at"]


class ApiKeyIn(InSchema):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=366)


class ApiKeyCreatedOut(Schema):
    key: ApiKeyOut
    secret: str = Field(description="The key (apk_…); shown only in this response.")
    expires_at: datetime | None = None


class GrantOut(ModelSchema):
    model_id: int | None = None
    model_name: str | None = Field(None, alias="model.name")
    adapter_id: int | None = None
    adapter_name: str | None = Field(None, alias="adapter.name")
    route_id: int | None = None
    route_name: str | None = Field(None, alias="route.name")

    class Meta:
        model = Grant
        fields = ["id", "created_at"]


class GrantIn(InSchema):
    model_id: int | None = None
    adapter_id: int | None = None
    route_id: int | None = None

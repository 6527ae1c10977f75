"""Request and response bodies of the registry API."""

from __future__ import annotations

from ninja import Field, ModelSchema, Schema

from appliance.api.base import InSchema
from appliance.registry.choices import EntryStatus, Storage
from appliance.registry.models import Adapter, Artifact, BaseModel

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"  # also a valid served-model name for vLLM


class ArtifactFileOut(Schema):
    path: str
    size: int
    sha256: str


class ArtifactOut(ModelSchema):
    files: list[ArtifactFileOut]

    class Meta:
        model = Artifact
        fields = ["id", "digest", "storage", "total_bytes", "created_at", "verified_at"]


class EntryFields(Schema):
    imported_by: str | None = Field(None, alias="imported_by.username")
    approved_by: str | None = Field(None, alias="approved_by.username")
    artifact: ArtifactOut | None = None


class ModelOut(ModelSchema, EntryFields):
    class Meta:
        model = BaseModel
        fields = [
            "id",
            "name",
            "description",
            "status",
            "storage",
            "source_path",
            "family",
            "architecture",
            "parameter_count",
            "context_length",
            "licence",
            "source",
            "imported_at",
            "approved_at",
            "retired_at",
        ]


class AdapterOut(ModelSchema, EntryFields):
    base_model_id: int
    base_model_name: str = Field(alias="base_model.name")

    class Meta:
        model = Adapter
        fields = [
            "id",
            "name",
            "description",
            "status",
            "storage",
            "source_path",
            "rank",
            "alpha",
            "target_modules",
            "imported_at",
            "approved_at",
            "retired_at",
        ]


class JobRef(Schema):
    id: str
    status: str


class ModelImportIn(InSchema):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    path: str = Field(
        min_length=1,
        max_length=1024,
        description="Absolute directory inside APPLIANCE_IMPORT_ROOTS.",
    )
    storage: Storage = Storage.COPY
    description: str = Field("", max_length=2000)
    licence: str = Field("", max_length=100)
    source: str = Field("", max_length=300)


class AdapterImportIn(InSchema):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    base_model_id: int
    path: str = Field(
        min_length=1,
        max_length=1024,
        description="Absolute directory inside APPLIANCE_IMPORT_ROOTS.",
    )
    storage: Storage = Storage.COPY
    description: str = Field("", max_length=2000)


class AdapterUploadIn(InSchema):
    name: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    base_model_id: int
    description: str = Field("", max_length=2000)


class ImportedOut(Schema):
    id: int
    name: str
    status: str
    job: JobRef


class EntryFilter(Schema):
    status: EntryStatus | None = None
    q: str | None = Field(None, max_length=100, description="Part of the name.")


class AdapterFilter(EntryFilter):
    base_model_id: int | None = None

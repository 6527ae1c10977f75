"""Base models, LoRA adapters, and the hashed file sets (artifacts) behind them."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from appliance.registry.choices import EntryStatus, Storage


class Artifact(models.Model):
    """A set of files with their sha256s. ``digest`` is the sha256 of the canonical manifest, so
    identical file sets share one artifact and, when copied, one set of blobs."""

    digest = models.CharField(max_length=64)
    storage = models.CharField(max_length=16, choices=Storage.choices)
    # Where REFERENCE files live; empty for COPY (blobs are found by their hash).
    location = models.CharField(max_length=1024, blank=True)
    files = models.JSONField(default=list)  # [{"path", "size", "sha256"}], sorted by path
    total_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["digest", "location"], name="registry_artifact_unique")
        ]

    def __str__(self) -> str:
        return f"sha256:{self.digest[:12]} ({self.storage})"


class RegistryEntry(models.Model):
    """What base models and adapters share: a name, an artifact, a status and who did what."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    status = models.CharField(
        max_length=16, choices=EntryStatus.choices, default=EntryStatus.IMPORTING
    )
    storage = models.CharField(max_length=16, choices=Storage.choices)
    source_path = models.CharField(max_length=1024)
    artifact = models.ForeignKey(
        Artifact, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    imported_at = models.DateTimeField(auto_now_add=True)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class BaseModel(RegistryEntry):
    """A base model (Hugging Face layout, safetensors weights) that engines can serve."""

    family = models.CharField(max_length=64, blank=True)  # config.json model_type, e.g. llama
    architecture = models.CharField(max_length=100, blank=True)  # e.g. LlamaForCausalLM
    parameter_count = models.BigIntegerField(default=0)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    licence = models.CharField(max_length=100, blank=True)
    source = models.CharField(max_length=300, blank=True)  # where it came from, e.g. a vendor
    config = models.JSONField(default=dict)  # config.json, for validating adapters

    class Meta(RegistryEntry.Meta):
        pass

    @property
    def generates(self) -> bool:
        """A text generator (``…ForCausalLM``), which takes LoRA adapters; otherwise a pooling
        model (an encoder such as BertModel) that serves embeddings."""
        return self.architecture.endswith("ForCausalLM")


class Adapter(RegistryEntry):
    """A LoRA adapter for one base model, validated against that model's shapes."""

    base_model = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="adapters")
    rank = models.PositiveIntegerField()
    alpha = models.FloatField()
    target_modules = models.JSONField(default=list)

    class Meta(RegistryEntry.Meta):
        pass

"""Import a base model from a local directory, as a named user (same service as the API)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from appliance.core.cli import cli_actor, fail
from appliance.core.errors import DomainError
from appliance.registry.choices import Storage
from appliance.registry.services import model_import


class Command(BaseCommand):
    help = "Import a base model directory (Hugging Face layout, safetensors)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--name", required=True)
        parser.add_argument("--as", dest="username", required=True, help="Acting user.")
        parser.add_argument("--storage", choices=Storage.values, default=Storage.COPY)
        parser.add_argument("--licence", default="")
        parser.add_argument("--source", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model, job = model_import(
                actor=cli_actor(options["username"]),
                name=options["name"],
                path=options["path"],
                storage=options["storage"],
                licence=options["licence"],
                source=options["source"],
            )
        except DomainError as exc:
            raise fail(exc) from None
        model.refresh_from_db()
        job.refresh_from_db()
        self.stdout.write(
            f"model {model.pk} {model.name}: {model.status} (job {job.id} {job.status})"
        )

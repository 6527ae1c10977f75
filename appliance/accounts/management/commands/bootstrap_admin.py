"""Create the first administrator with a generated password, once (``make run`` calls this)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from appliance.accounts.services import user_bootstrap_admin
from appliance.agent.config import write_private


class Command(BaseCommand):
    help = "Create the first admin (generated password, printed once) if no user exists yet."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--credentials-file",
            default=str(settings.VAR_DIR / "demo-credentials.json"),
            help="Where to write the credentials (mode 0600).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        created = user_bootstrap_admin(username=options["username"])
        if created is None:
            self.stdout.write("Users already exist; no admin created.")
            return
        user, password = created
        path = write_private(
            Path(options["credentials_file"]), {"username": user.username, "password": password}
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Created admin {user.username!r} with password {password}\n"
                f"(shown once; also saved to {path}, mode 0600). Sign in to the console at "
                "/console/: an admin sets up an authenticator app (TOTP) at the first sign-in."
            )
        )

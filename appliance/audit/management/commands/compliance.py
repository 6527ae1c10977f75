"""``manage.py compliance register``: the GDPR Art. 30 record of processing activities."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from appliance.audit.register import register_build, register_markdown
from appliance.core.actors import system_actor


class Command(BaseCommand):
    help = "Generate compliance documents from the appliance's live configuration."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True)
        register = commands.add_parser("register", help="GDPR Art. 30 record of processing.")
        register.add_argument("--format", choices=("markdown", "json"), default="markdown")
        register.add_argument("--out", help="Write to this file instead of standard output.")

    def handle(self, *args: Any, **options: Any) -> None:
        register = register_build(actor=system_actor("manage.py compliance register"))
        text = (
            json.dumps(register, indent=2) + "\n"
            if options["format"] == "json"
            else register_markdown(register)
        )
        if options["out"]:
            Path(options["out"]).write_text(text, encoding="utf-8")
            self.stdout.write(f"wrote {options['out']}")
        else:
            self.stdout.write(text, ending="")

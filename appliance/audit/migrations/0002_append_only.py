"""Make the audit log append-only in the database itself, and seed the sequence row.

Triggers refuse UPDATE and DELETE (and TRUNCATE on Postgres) on audit events, so neither a bug nor
the application's own database role can rewrite history. Only someone who can drop triggers (the
database owner) could, and the Merkle checkpoints are there to catch that.
"""

from __future__ import annotations

from django.db import migrations

from appliance.audit.triggers import append_only


def seed_sequence(apps, schema_editor):  # type: ignore[no-untyped-def]
    apps.get_model("audit", "AuditSequence").objects.get_or_create(pk=1, defaults={"value": 0})


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]

    operations = [
        append_only("audit_auditevent", "audit_event"),
        migrations.RunPython(seed_sequence, migrations.RunPython.noop),
    ]

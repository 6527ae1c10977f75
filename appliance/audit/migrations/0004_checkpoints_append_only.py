"""Signed checkpoints are append-only too: triggers refuse UPDATE and DELETE (and TRUNCATE)."""

from __future__ import annotations

from django.db import migrations

from appliance.audit.triggers import append_only


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_checkpoints_keys_exports")]

    operations = [append_only("audit_auditcheckpoint", "audit_checkpoint")]

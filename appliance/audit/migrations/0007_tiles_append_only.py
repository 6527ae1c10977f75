"""Stored tiles are append-only too: a rewritten tile would send proofs astray."""

from __future__ import annotations

from django.db import migrations

from appliance.audit.triggers import append_only


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_breach_records")]

    operations = [append_only("audit_audittile", "audit_tile")]

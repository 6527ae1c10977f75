"""Stored tiles are append-only too: a rewritten tile would send proofs astray."""

from __future__ import annotations

from django.db import migrations

TABLE = "audit_audittile"
MESSAGE = "audit tiles are append-only"

SQLITE_UP = [
    f"CREATE TRIGGER audit_tile_no_update BEFORE UPDATE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
    f"CREATE TRIGGER audit_tile_no_delete BEFORE DELETE ON {TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END;",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS audit_tile_no_update;",
    "DROP TRIGGER IF EXISTS audit_tile_no_delete;",
]
POSTGRES_UP = [
    "CREATE OR REPLACE FUNCTION audit_tile_append_only() RETURNS trigger "
    "LANGUAGE plpgsql AS $$ "
    f"BEGIN RAISE EXCEPTION '{MESSAGE}' USING ERRCODE = 'insufficient_privilege'; END; $$;",
    f"CREATE TRIGGER audit_tile_no_change BEFORE UPDATE OR DELETE ON {TABLE} "
    "FOR EACH ROW EXECUTE FUNCTION audit_tile_append_only();",
    f"CREATE TRIGGER audit_tile_no_truncate BEFORE TRUNCATE ON {TABLE} "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_tile_append_only();",
]
POSTGRES_DOWN = [
    f"DROP TRIGGER IF EXISTS audit_tile_no_change ON {TABLE};",
    f"DROP TRIGGER IF EXISTS audit_tile_no_truncate ON {TABLE};",
    "DROP FUNCTION IF EXISTS audit_tile_append_only();",
]


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise RuntimeError(f"no append-only triggers written for {vendor}")
        for sql in statements[vendor]:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("audit", "0006_breach_records")]

    operations = [
        migrations.RunPython(
            _run({"sqlite": SQLITE_UP, "postgresql": POSTGRES_UP}),
            _run({"sqlite": SQLITE_DOWN, "postgresql": POSTGRES_DOWN}),
        )
    ]

"""Append-only triggers for an audit table, for migrations: UPDATE and DELETE (and TRUNCATE on
Postgres) are refused by the database itself, so neither a bug nor the application's own role can
rewrite what was signed. One definition for every append-only table added after events."""

from __future__ import annotations

from django.db import migrations


def append_only(table: str, name: str) -> migrations.RunPython:
    """A migration operation that installs (and on reverse removes) the triggers on ``table``;
    ``name`` prefixes the trigger and function names and says what is refused."""
    message = f"{name.replace('_', ' ')}s are append-only"
    up = {
        "sqlite": [
            f"CREATE TRIGGER {name}_no_update BEFORE UPDATE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END;",
            f"CREATE TRIGGER {name}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END;",
        ],
        "postgresql": [
            f"CREATE OR REPLACE FUNCTION {name}_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}' USING ERRCODE = 'insufficient_privilege'; "
            "END; $$;",
            f"CREATE TRIGGER {name}_no_change BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_append_only();",
            f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {name}_append_only();",
        ],
    }
    down = {
        "sqlite": [
            f"DROP TRIGGER IF EXISTS {name}_no_update;",
            f"DROP TRIGGER IF EXISTS {name}_no_delete;",
        ],
        "postgresql": [
            f"DROP TRIGGER IF EXISTS {name}_no_change ON {table};",
            f"DROP TRIGGER IF EXISTS {name}_no_truncate ON {table};",
            f"DROP FUNCTION IF EXISTS {name}_append_only();",
        ],
    }
    return migrations.RunPython(_run(up), _run(down))


def _run(statements: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    def run(apps, schema_editor):  # type: ignore[no-untyped-def]
        vendor = schema_editor.connection.vendor
        if vendor not in statements:
            raise RuntimeError(f"no append-only triggers written for {vendor}")
        for sql in statements[vendor]:
            schema_editor.execute(sql)

    return run

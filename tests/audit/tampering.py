"""What a root user with the database password can do: drop the append-only triggers and rewrite
rows. The triggers come back when the test's transaction rolls back (DDL is transactional in both
SQLite and Postgres)."""

from __future__ import annotations

from typing import Any

from django.db import connection

TRIGGERS = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS audit_event_no_update",
        "DROP TRIGGER IF EXISTS audit_event_no_delete",
        "DROP TRIGGER IF EXISTS audit_checkpoint_no_update",
        "DROP TRIGGER IF EXISTS audit_checkpoint_no_delete",
        "DROP TRIGGER IF EXISTS audit_tile_no_update",
        "DROP TRIGGER IF EXISTS audit_tile_no_delete",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS audit_event_no_change ON audit_auditevent",
        "DROP TRIGGER IF EXISTS audit_checkpoint_no_change ON audit_auditcheckpoint",
        "DROP TRIGGER IF EXISTS audit_tile_no_change ON audit_audittile",
    ],
}


def as_root(sql: str, params: list[Any] | None = None) -> None:
    """Run ``sql`` with the append-only triggers dropped (again and again, in one test)."""
    with connection.cursor() as cursor:
        for drop in TRIGGERS[connection.vendor]:
            cursor.execute(drop)
        cursor.execute(sql, params or [])

"""`audit verify` with worker processes (what a large log gets) on a real, committed database:
forked workers must find exactly what one process finds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.audit.test_backup_restore import manage

SEED = """
from appliance.audit.checkpoints import checkpoint_create
from appliance.audit.services import AuditEntry, audit_record_many
from appliance.core.actors import system_actor
for batch in range(6):
    audit_record_many([AuditEntry(actor=system_actor(), action="test.event", object_id=i,
                                  details={"i": i}) for i in range(500)])
    checkpoint_create()
"""
VERIFY = """
from appliance.audit import leaves
from appliance.audit.verification import audit_verify
from appliance.core.actors import system_actor
leaves.PARALLEL_FROM = 100
one = b"".join(run.leaves for run in leaves.leaf_runs(3001, workers=1))
several = b"".join(run.leaves for run in leaves.leaf_runs(3001, workers=2))
result = audit_verify(actor=system_actor(), workers=2)
print(result.valid, result.events_checked, one == several)
for problem in result.problems:
    print(problem)
"""


def test_worker_processes_verify_like_one_process_and_name_a_changed_row(tmp_path: Path) -> None:
    var = tmp_path / "var"
    var.mkdir(mode=0o700)
    assert manage(var, "migrate", "-v0").returncode == 0
    seeded = manage(var, "shell", "--no-imports", "-c", SEED)
    assert seeded.returncode == 0, seeded.stderr
    parallel = manage(var, "shell", "--no-imports", "-c", VERIFY)
    assert parallel.returncode == 0, parallel.stderr
    assert parallel.stdout.split()[:3] == ["True", "3001", "True"]

    with sqlite3.connect(var / "appliance.sqlite3") as db:
        db.execute("DROP TRIGGER audit_event_no_update")
        db.execute("UPDATE audit_auditevent SET action = 'forged' WHERE seq = 1234")
    tampered = manage(var, "shell", "--no-imports", "-c", VERIFY)
    assert tampered.stdout.startswith("False")
    assert "event 1234 was changed" in tampered.stdout

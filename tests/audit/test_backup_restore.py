"""GDPR Art. 32 "restore tested": an online backup of the embedded database, restored elsewhere,
still verifies, checkpoints and signing key included (the master key travels separately)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def manage(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(APPLIANCE_VAR_DIR=str(var), DJANGO_SETTINGS_MODULE="appliance.settings")
    return subprocess.run(  # noqa: S603 - our own manage.py
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_backup_restored_elsewhere_verifies(tmp_path: Path) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    live.mkdir(mode=0o700)
    restored.mkdir(mode=0o700)
    assert manage(live, "migrate", "-v0").returncode == 0
    for _ in range(2):
        assert manage(live, "audit", "checkpoint").returncode == 0
    # An online, consistent copy (what `sqlite3 .backup` does), plus the master key file.
    with (
        sqlite3.connect(live / "appliance.sqlite3") as source,
        sqlite3.connect(restored / "appliance.sqlite3") as target,
    ):
        source.backup(target)
    shutil.copy2(live / "master.key", restored / "master.key")
    shutil.copy2(live / "secret_key", restored / "secret_key")

    verified = manage(restored, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("valid: ")
    fingerprint = manage(live, "audit", "fingerprint").stdout.split()[0]
    assert manage(restored, "audit", "fingerprint").stdout.split()[0] == fingerprint
    signed = manage(restored, "audit", "checkpoint")  # the restored box keeps signing
    assert signed.returncode == 0, signed.stderr


def test_a_restore_without_its_master_key_cannot_sign(tmp_path: Path) -> None:
    live, restored = tmp_path / "live", tmp_path / "restored"
    live.mkdir(mode=0o700)
    restored.mkdir(mode=0o700)
    assert manage(live, "migrate", "-v0").returncode == 0
    assert manage(live, "audit", "checkpoint").returncode == 0
    shutil.copy2(live / "appliance.sqlite3", restored / "appliance.sqlite3")
    result = manage(restored, "audit", "checkpoint")  # a new master key is generated here
    assert result.returncode != 0
    assert "is not configured" in result.stderr
    assert "restore the master key" in result.stderr
    assert "Traceback" not in result.stderr

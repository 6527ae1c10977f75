"""Fixtures of the audit export tests: a log written at known past times, and bundles of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.accounts.models import User
from tests.audit.bundles import RANGE_SINCE, RANGE_UNTIL, Built, Log, build, write_log


@pytest.fixture
def export_log(admin: User) -> Log:
    return write_log(admin)


@pytest.fixture
def full_export(export_log: Log, tmp_path: Path) -> Built:
    """The whole log, up to a checkpoint signed as the export is built."""
    return build(tmp_path / "full")


@pytest.fixture
def ranged_export(export_log: Log, tmp_path: Path) -> Built:
    """Events 5..12 of the twenty: a prefix before the run and events after it up to the
    checkpoint, so both the prefix and the range-to-checkpoint proof are non-trivial."""
    return build(tmp_path / "ranged", since=RANGE_SINCE, until=RANGE_UNTIL)

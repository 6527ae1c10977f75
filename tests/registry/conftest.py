"""Fixtures shared by the registry tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def run_jobs(django_capture_on_commit_callbacks: Any) -> Any:
    """Call something and then run the jobs it queued (on_commit callbacks), as a commit would."""

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return fn(*args, **kwargs)

    return call

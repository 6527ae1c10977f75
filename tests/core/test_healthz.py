"""Liveness for load balancers: no sign-in, no database, nothing about the installation."""

from __future__ import annotations

from django.test import Client


def test_healthz_answers_ok_without_authentication() -> None:
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response["X-Request-ID"]


def test_healthz_needs_no_database() -> None:
    # No django_db mark: pytest-django blocks database access, so a query here would fail.
    assert Client().get("/healthz").status_code == 200

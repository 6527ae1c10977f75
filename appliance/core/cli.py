"""Helpers for management commands: acting as a named person, and turning domain errors into a
message and a non-zero exit."""

from __future__ import annotations

from django.core.management.base import CommandError

from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User
from appliance.core.actors import Actor
from appliance.core.errors import DomainError


def cli_actor(username: str) -> Actor:
    """The person a command acts as (``--as``), so the audit log and four-eyes rule see them."""
    user = User.objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(f"No active user named {username!r}.")
    return actor_for_user(user, via="cli")


def fail(exc: DomainError) -> CommandError:
    """A CommandError (exit status 1) carrying the domain error's reason."""
    fields = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.fields.items())
    return CommandError(f"{exc.detail} [{exc.code}]" + (f" ({fields})" if fields else ""))

"""Reads of applications: everyone who may see all of them, or an owner their own."""

from __future__ import annotations

from django.db.models import QuerySet

from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.permissions import Capability, allows, require
from appliance.core.actors import Actor


def application_list(*, actor: Actor) -> QuerySet[Application]:
    """Admins, operators and auditors see every application; app owners their own only."""
    applications = Application.objects.select_related("owner", "created_by")
    if allows(actor, Capability.APPS_VIEW_ALL):
        return applications.order_by("name")
    require(actor, Capability.APPS_OWN)
    return applications.filter(owner_id=actor.user_id).order_by("name")


def api_key_list(*, application: Application) -> QuerySet[ApiKey]:
    return application.keys.select_related("created_by").order_by("-created_at", "-id")


def grant_list(*, application: Application) -> QuerySet[Grant]:
    return application.grants.select_related("model", "adapter", "route").order_by("id")

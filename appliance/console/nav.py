"""The console's navigation: each page's place and the capability that shows it, so a person
sees only what their role may open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from appliance.accounts import elevation
from appliance.accounts.actors import actor_for_user
from appliance.accounts.models import User
from appliance.accounts.permissions import Capability, allows

FLASH = "console_flash"  # one message for the next page (the messages framework's middleware
# would cost every gateway request two thread hops)


def flash(request: HttpRequest, message: str) -> None:
    request.session[FLASH] = message


@dataclass(frozen=True)
class Entry:
    label: str
    url_name: str
    capabilities: tuple[Capability, ...] = ()  # any one of them shows the entry


NAV = (
    Entry("Dashboard", "console:dashboard"),
    Entry("Models", "console:models", (Capability.REGISTRY_VIEW,)),
    Entry("Nodes & GPUs", "console:nodes", (Capability.FLEET_VIEW,)),
    Entry("Deployments", "console:deployments", (Capability.FLEET_VIEW,)),
    Entry("Applications", "console:applications", (Capability.APPS_OWN, Capability.APPS_VIEW_ALL)),
    Entry("Routes", "console:routes", (Capability.ROUTES_VIEW,)),
    Entry("Usage & cost", "console:usage", (Capability.COSTS_VIEW,)),
    Entry("Audit log", "console:audit", (Capability.AUDIT_VIEW,)),
    Entry("Users", "console:users", (Capability.USERS_VIEW,)),
)


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the entries this person may open, the current one marked."""
    if not request.path.startswith("/console/"):
        return {}
    message = request.session.pop(FLASH, "")
    user = getattr(request, "user", None)
    if not isinstance(user, User):
        return {"flash": message}
    # console_view built it (with the emergency-access lookup); a page without one builds it here.
    actor = getattr(request, "actor", None) or actor_for_user(user)
    entries = []
    for entry in NAV:
        if entry.capabilities and not any(allows(actor, c) for c in entry.capabilities):
            continue
        url = reverse(entry.url_name)
        current = request.path == url or (url != "/console/" and request.path.startswith(url))
        entries.append({"label": entry.label, "url": url, "current": current})
    emergency = elevation.active(user.pk) if actor.role != user.role else None
    return {"nav": entries, "flash": message, "emergency": emergency}

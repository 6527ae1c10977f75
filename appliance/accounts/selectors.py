"""Reads of accounts that need more than a lookup."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from appliance.accounts.models import ApiToken, User
from appliance.accounts.permissions import Capability, allows, require
from appliance.core.actors import Actor


def user_list(
    *, actor: Actor, role: str | None = None, is_active: bool | None = None, q: str | None = None
) -> QuerySet[User]:
    require(actor, Capability.USERS_VIEW)
    users = User.objects.order_by("username")
    if role:
        users = users.filter(role=role)
    if is_active is not None:
        users = users.filter(is_active=is_active)
    if q:
        users = users.filter(Q(username__icontains=q) | Q(email__icontains=q))
    return users


def user_visible(*, actor: Actor) -> QuerySet[User]:
    """Users the actor may look at: everyone for user viewers, only themselves otherwise."""
    if allows(actor, Capability.USERS_VIEW):
        return User.objects.all()
    return User.objects.filter(pk=actor.user_id or 0)


def token_visible(*, actor: Actor) -> QuerySet[ApiToken]:
    """Tokens the actor may see or revoke: their own; admins see all."""
    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    if allows(actor, Capability.USERS_MANAGE):
        return tokens
    return tokens.filter(user_id=actor.user_id or 0)

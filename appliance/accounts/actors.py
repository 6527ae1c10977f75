"""Turning an authenticated user or token into the Actor that services check and audit."""

from __future__ import annotations

from appliance.accounts.elevation import effective_role
from appliance.accounts.models import ApiToken, User
from appliance.core.actors import Actor, ActorKind


def actor_for_user(user: User, *, via: str = "") -> Actor:
    """A person acting in their own session (``via`` notes e.g. ``cli``)."""
    label = f"{user.username} ({via})" if via else user.username
    return Actor(
        kind=ActorKind.USER, id=str(user.pk), label=label, role=effective_role(user), user=user
    )


def actor_for_token(token: ApiToken) -> Actor:
    """A person acting through one of their API tokens; the token id is the actor id."""
    user = token.user
    return Actor(
        kind=ActorKind.TOKEN,
        id=str(token.pk),
        label=f"{user.username} via token {token.prefix}",
        role=effective_role(user),
        user=user,
    )

"""Who did something: the principal named on every audit event and checked by every service."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ActorKind:
    """The kinds of principal; an audit event's actor is never null, so anonymity is a kind too."""

    USER = "user"
    TOKEN = "token"  # noqa: S105 - a user acting through a personal API token
    NODE = "node"
    APPLICATION = "application"
    SYSTEM = "system"
    ANONYMOUS = "anonymous"

    ALL = (USER, TOKEN, NODE, APPLICATION, SYSTEM, ANONYMOUS)


@dataclass(frozen=True)
class Actor:
    """A principal acting now. ``user`` is set for USER and TOKEN actors; ``role`` mirrors theirs."""

    kind: str
    id: str
    label: str
    role: str = ""
    user: Any = field(default=None, compare=False, repr=False)

    @property
    def user_id(self) -> int | None:
        """The acting user's primary key, if a person acts."""
        return self.user.pk if self.user is not None else None

    @property
    def is_system(self) -> bool:
        return self.kind == ActorKind.SYSTEM


def system_actor(label: str = "system") -> Actor:
    """The appliance itself (background jobs, bootstrap, demo set-up)."""
    return Actor(kind=ActorKind.SYSTEM, id="system", label=label)


ANONYMOUS = Actor(kind=ActorKind.ANONYMOUS, id="anonymous", label="anonymous")

"""Who is calling: an application's API key, resolved to its limits and the models and routes it
may use.

Resolved keys are cached per process and dropped when the access generation moves (a key revoked,
a grant or limit changed; see appliance.core.changes) or after APPLIANCE_GATEWAY_CACHE_SECONDS,
so the next request after a revocation is refused without a database query on every call.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.utils import timezone

from appliance.access.choices import ApplicationStatus
from appliance.access.models import ApiKey
from appliance.access.services import KEY_KIND
from appliance.core.actors import Actor, ActorKind
from appliance.core.secrets import find_credential, hash_credential, split_credential
from appliance.gateway.targets import Target, granted_targets
from appliance.routing.plans import RoutePlan, route_plans


@dataclass(frozen=True)
class Limits:
    """An application's limits; None means no limit."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_budget: int | None = None
    max_concurrent_requests: int | None = None
    max_tokens_per_request: int | None = None


@dataclass(frozen=True)
class Principal:
    """An active application acting through one of its keys."""

    key_id: int
    key_prefix: str
    expires_at: datetime | None
    application_id: int
    application_name: str
    policy_version: int
    data_policy: str
    limits: Limits
    targets: dict[str, Target] = field(default_factory=dict)
    routes: dict[str, RoutePlan] = field(default_factory=dict)

    def actor(self) -> Actor:
        return Actor(
            kind=ActorKind.APPLICATION,
            id=str(self.application_id),
            label=f"{self.application_name} (key {self.key_prefix})",
        )

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class KeyRefused(Exception):
    """Why a key cannot be used: ``unknown``, ``revoked``, ``expired`` or ``disabled``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def principal_load(token: str) -> Principal:
    """Resolve a presented key from the database; raises KeyRefused."""
    key = find_credential(
        ApiKey.objects.select_related("application"), token, KEY_KIND, hash_field="key_hash"
    )
    if key is None:
        raise KeyRefused("unknown")
    if key.revoked_at is not None:
        raise KeyRefused("revoked")
    application = key.application
    if application.status != ApplicationStatus.ACTIVE:
        raise KeyRefused("disabled")
    return Principal(
        key_id=key.pk,
        key_prefix=key.prefix,
        expires_at=key.expires_at,
        application_id=application.pk,
        application_name=application.name,
        policy_version=application.policy_version,
        data_policy=application.data_policy,
        limits=Limits(
            requests_per_minute=application.requests_per_minute,
            tokens_per_minute=application.tokens_per_minute,
            monthly_token_budget=application.monthly_token_budget,
            max_concurrent_requests=application.max_concurrent_requests,
            max_tokens_per_request=application.max_tokens_per_request,
        ),
        targets=granted_targets(application.pk),
        routes=route_plans(application.pk),
    )


@dataclass
class _Entry:
    outcome: Principal | KeyRefused
    generation: object
    loaded_at: float


class PrincipalCache:
    """Resolved keys by the hash of the presented secret (never by prefix alone). Keys that exist
    and made-up ones are kept apart, so a flood of made-up keys only evicts other made-up ones."""

    MAX_UNKNOWN = 10_000

    def __init__(self) -> None:
        self._known: dict[str, _Entry] = {}  # bounded by the keys that exist
        self._unknown: OrderedDict[str, _Entry] = OrderedDict()

    def get(self, token: str, generation: object) -> Principal | KeyRefused | None:
        digest = hash_credential(token)
        entry = self._known.get(digest) or self._unknown.get(digest)
        if entry is None or entry.generation != generation:
            return None
        if time.monotonic() - entry.loaded_at > settings.APPLIANCE_GATEWAY_CACHE_SECONDS:
            return None
        return entry.outcome

    def put(self, token: str, generation: object, outcome: Principal | KeyRefused) -> None:
        digest = hash_credential(token)
        entry = _Entry(outcome, generation, time.monotonic())
        if isinstance(outcome, KeyRefused) and outcome.reason == "unknown":
            self._unknown[digest] = entry
            while len(self._unknown) > self.MAX_UNKNOWN:
                self._unknown.popitem(last=False)
        else:
            self._known[digest] = entry

    def clear(self) -> None:
        self._known.clear()
        self._unknown.clear()


def well_formed(token: str) -> bool:
    """Shaped like an application key; anything else is refused without a lookup or a cache slot."""
    return split_credential(token, KEY_KIND) is not None

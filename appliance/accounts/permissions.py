"""Deny by default: which role may do what. Services call ``require`` before they change or show
anything; the API and console only mirror these answers."""

from __future__ import annotations

from enum import StrEnum

from appliance.accounts.choices import Role
from appliance.core.actors import Actor
from appliance.core.errors import PermissionDenied


class Capability(StrEnum):
    USERS_VIEW = "view users"
    USERS_MANAGE = "manage users"
    REGISTRY_VIEW = "view models and adapters"
    REGISTRY_WRITE = "import, verify or retire models and adapters"
    REGISTRY_APPROVE = "approve models and adapters"
    JOBS_VIEW = "view background jobs"
    AUDIT_VIEW = "read the audit log"
    AUDIT_EXPORT = "export or verify the audit log"
    AUDIT_MANAGE = "rotate the audit signing key"
    PRIVACY_MANAGE = "manage retention, legal holds and breach records"
    FLEET_VIEW = "view nodes, GPUs and deployments"
    FLEET_MANAGE = "enroll or revoke nodes and change deployments"
    APPS_VIEW_ALL = "view every application"
    APPS_OWN = "create applications and manage their keys"
    APPS_MANAGE = "set applications' limits, policies and owners, and grant models"
    CONTENT_READ = "read stored prompts and completions"
    CONTENT_ERASE = "erase any data subject's stored content"  # owners: their applications'
    MASTER_KEY_ROTATE = "rotate the master key"
    ROUTES_VIEW = "view routes and task classes"
    ROUTES_MANAGE = "define routes, task classes, cost models and prices"
    COSTS_VIEW = "view cost and savings reports"
    EVALUATIONS_VIEW = "view evaluations"
    EVALUATIONS_RUN = "upload evaluation sets and run evaluations"


_ALL = frozenset(Role.values)
POLICY: dict[Capability, frozenset[str]] = {
    Capability.USERS_VIEW: frozenset({Role.ADMIN, Role.AUDITOR}),
    Capability.USERS_MANAGE: frozenset({Role.ADMIN}),
    Capability.REGISTRY_VIEW: _ALL,
    Capability.REGISTRY_WRITE: frozenset({Role.ADMIN, Role.OPERATOR}),
    Capability.REGISTRY_APPROVE: frozenset({Role.ADMIN}),
    Capability.JOBS_VIEW: frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    Capability.AUDIT_VIEW: frozenset({Role.ADMIN, Role.AUDITOR}),
    Capability.AUDIT_EXPORT: frozenset({Role.ADMIN, Role.AUDITOR}),
    Capability.AUDIT_MANAGE: frozenset({Role.ADMIN}),
    Capability.PRIVACY_MANAGE: frozenset({Role.ADMIN}),
    Capability.FLEET_VIEW: frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    Capability.FLEET_MANAGE: frozenset({Role.ADMIN, Role.OPERATOR}),
    Capability.APPS_VIEW_ALL: frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    Capability.APPS_OWN: frozenset({Role.ADMIN, Role.OPERATOR, Role.APP_OWNER}),
    Capability.APPS_MANAGE: frozenset({Role.ADMIN, Role.OPERATOR}),
    Capability.CONTENT_READ: frozenset({Role.ADMIN}),
    Capability.CONTENT_ERASE: frozenset({Role.ADMIN}),
    Capability.MASTER_KEY_ROTATE: frozenset({Role.ADMIN}),
    Capability.ROUTES_VIEW: _ALL,
    Capability.ROUTES_MANAGE: frozenset({Role.ADMIN, Role.OPERATOR}),
    Capability.COSTS_VIEW: _ALL,  # app owners: their own applications' rows only
    Capability.EVALUATIONS_VIEW: frozenset({Role.ADMIN, Role.OPERATOR, Role.AUDITOR}),
    Capability.EVALUATIONS_RUN: frozenset({Role.ADMIN, Role.OPERATOR}),
}


def allows(actor: Actor, capability: Capability) -> bool:
    """Whether the actor's role grants the capability; the system actor may do anything."""
    return actor.is_system or actor.role in POLICY[capability]


def require(actor: Actor, capability: Capability) -> None:
    """Raise PermissionDenied (which the API audits) unless the actor may do this."""
    if not allows(actor, capability):
        raise PermissionDenied(f"Your role ({actor.role or actor.kind}) may not {capability}.")

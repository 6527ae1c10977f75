"""Enrolling, authenticating, revoking and watching nodes.

A node proves itself with a credential it got once, in exchange for a one-time enrollment token
that an operator created. Both are stored as prefix + sha256 and compared in constant time.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import ANONYMOUS, Actor, ActorKind, system_actor
from appliance.core.context import current_source_ip
from appliance.core.errors import Conflict, NotAuthenticated, Throttled, ValidationFailed
from appliance.core.secrets import (
    credential_matches,
    find_credential,
    new_credential,
    split_credential,
)
from appliance.core.throttle import count_failure, retry_after
from appliance.fleet.choices import DesiredState, NodeStatus
from appliance.fleet.models import EngineInstance, EnrollmentToken, Node

ENROLLMENT_KIND = "enr"
NODE_KIND = "nod"
MAX_ENROLLMENT_HOURS = 24 * 7
BAD_ENROLLMENT = "The enrollment token is not valid: unknown, expired, revoked or already used."


def node_actor(node: Node) -> Actor:
    """The node as the actor of the audit events its agent causes."""
    return Actor(kind=ActorKind.NODE, id=str(node.pk), label=f"node {node.name}")


def enrollment_token_create(
    *, actor: Actor, name: str, expires_in_hours: int | None = None
) -> tuple[EnrollmentToken, str]:
    """A one-time token to enroll one machine; the plaintext is returned once."""
    require(actor, Capability.FLEET_MANAGE)
    name = name.strip()
    if not name:
        raise ValidationFailed("A name is required.", fields={"name": ["Required."]})
    hours = expires_in_hours or settings.APPLIANCE_ENROLLMENT_TOKEN_HOURS
    if not 1 <= hours <= MAX_ENROLLMENT_HOURS:
        raise ValidationFailed(
            "Bad expiry.",
            fields={"expires_in_hours": [f"Between 1 and {MAX_ENROLLMENT_HOURS} hours."]},
        )
    plaintext, prefix, token_hash = new_credential(ENROLLMENT_KIND)
    with transaction.atomic():
        token = EnrollmentToken.objects.create(
            name=name,
            prefix=prefix,
            token_hash=token_hash,
            created_by=actor.user,
            expires_at=timezone.now() + timedelta(hours=hours),
        )
        audit_record(
            actor=actor,
            action="enrollment_token.create",
            object_type="enrollment_token",
            object_id=token.pk,
            details={"name": name, "prefix": prefix, "expires_at": token.expires_at.isoformat()},
        )
    return token, plaintext


def enrollment_token_revoke(*, actor: Actor, token: EnrollmentToken) -> EnrollmentToken:
    """Revoke an unused token so it can never enroll a machine."""
    require(actor, Capability.FLEET_MANAGE)
    with transaction.atomic():
        token = EnrollmentToken.objects.select_for_update().get(pk=token.pk)
        if token.used_at is not None:
            raise Conflict("This token was already used; revoke the node instead.", code="used")
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit_record(
                actor=actor,
                action="enrollment_token.revoke",
                object_type="enrollment_token",
                object_id=token.pk,
                details={"prefix": token.prefix},
            )
    return token


def _enrollment_key(source_ip: str) -> str:
    return f"enroll-fail:ip:{source_ip}"


def _enrollment_retry_after(source_ip: str) -> int:
    """Seconds before this address may try to enroll again (0: now). The endpoint is anonymous,
    so refusals are counted per address like failed sign-ins, and past the limit they are
    answered 429 without filling the audit log. An address may front many machines."""
    if not source_ip:
        return 0
    return retry_after(_enrollment_key(source_ip), settings.APPLIANCE_LOGIN_MAX_FAILURES * 4)


def _count_enrollment_failure(source_ip: str) -> None:
    if source_ip:
        count_failure(_enrollment_key(source_ip), settings.APPLIANCE_LOGIN_WINDOW_SECONDS)


def _enrollment_refused(reason: str, prefix: str | None) -> NotAuthenticated:
    _count_enrollment_failure(current_source_ip())
    audit_record(
        actor=ANONYMOUS,
        action="node.enroll",
        object_type="enrollment_token",
        outcome=Outcome.FAILURE,
        details={"reason": reason, "prefix": prefix or ""},
    )
    return NotAuthenticated(BAD_ENROLLMENT, code="enrollment_refused")


def _token_problem(found: EnrollmentToken | None, token: str) -> str:
    """Why this token cannot enroll a machine (its state), or "" if it can."""
    if found is None or not credential_matches(token, found.token_hash):
        return "unknown"
    return "" if found.state == "usable" else found.state


def node_enroll(
    *,
    token: str,
    name: str,
    hostname: str = "",
    agent_version: str = "",
    platform: dict[str, Any] | None = None,
) -> tuple[Node, str]:
    """Exchange a one-time enrollment token for a node and its credential (returned once).

    Every refusal gives the same answer, so the endpoint tells nothing about which tokens exist.
    """
    retry_after = _enrollment_retry_after(current_source_ip())
    if retry_after:
        raise Throttled("Too many refused enrollments from this address.", retry_after=retry_after)
    prefix = split_credential(token, ENROLLMENT_KIND)
    name = name.strip()
    if not name:
        raise ValidationFailed("A node name is required.", fields={"name": ["Required."]})
    with transaction.atomic():
        found = (
            EnrollmentToken.objects.select_for_update().filter(prefix=prefix).first()
            if prefix
            else None
        )
        problem = _token_problem(found, token)
        if found is not None and not problem:
            if Node.objects.filter(name=name).exists():
                raise Conflict(f"A node named {name!r} exists already.", code="duplicate_name")
            credential, cred_prefix, cred_hash = new_credential(NODE_KIND)
            try:
                with transaction.atomic():  # a name taken at the same moment: 409, not 500
                    node = Node.objects.create(
                        name=name,
                        hostname=hostname[:255],
                        credential_prefix=cred_prefix,
                        credential_hash=cred_hash,
                        agent_version=agent_version[:50],
                        platform=platform or {},
                        last_heartbeat_at=timezone.now(),
                    )
            except IntegrityError as exc:
                raise Conflict(
                    f"A node named {name!r} exists already.", code="duplicate_name"
                ) from exc
            found.used_at = timezone.now()
            found.node = node
            found.save(update_fields=["used_at", "node"])
            audit_record(
                actor=node_actor(node),
                action="node.enroll",
                object_type="node",
                object_id=node.pk,
                details={
                    "name": name,
                    "hostname": node.hostname,
                    "enrollment_token": found.prefix,
                    "credential": cred_prefix,
                },
            )
            return node, credential
    raise _enrollment_refused(problem, prefix)


def node_authenticate(*, credential: str) -> Node | None:
    """The node whose credential this is, unless it was revoked."""
    node = find_credential(
        Node.objects.all(),
        credential,
        NODE_KIND,
        hash_field="credential_hash",
        prefix_field="credential_prefix",
    )
    return None if node is None or node.status == NodeStatus.REVOKED else node


def engines_stop(instances: QuerySet[EngineInstance]) -> int:
    """Ask these engines to stop (their agents do it); how many were running. The caller audits
    why, in its own transaction."""
    return instances.filter(desired_state=DesiredState.RUNNING).update(
        desired_state=DesiredState.STOPPED
    )


def node_revoke(*, actor: Actor, node: Node) -> Node:
    """Revoke a node's credential: its next call is refused and its agent stops its engines."""
    require(actor, Capability.FLEET_MANAGE)
    with transaction.atomic():
        node = Node.objects.select_for_update().get(pk=node.pk)
        if node.status == NodeStatus.REVOKED:
            return node
        node.status = NodeStatus.REVOKED
        node.revoked_at = timezone.now()
        node.save(update_fields=["status", "revoked_at"])
        stopped = engines_stop(node.instances.all())
        audit_record(
            actor=actor,
            action="node.revoke",
            object_type="node",
            object_id=node.pk,
            details={"name": node.name, "engines_stopped": stopped},
        )
    return node


def nodes_mark_offline(*, now: Any = None) -> list[str]:
    """Mark online nodes that missed too many heartbeats offline (periodic); their names."""
    now = now or timezone.now()
    silence = timedelta(
        seconds=settings.APPLIANCE_HEARTBEAT_SECONDS * settings.APPLIANCE_NODE_OFFLINE_AFTER_MISSED
    )
    marked = []
    with transaction.atomic():
        for node in Node.objects.select_for_update().filter(
            status=NodeStatus.ONLINE, last_heartbeat_at__lt=now - silence
        ):
            node.status = NodeStatus.OFFLINE
            node.save(update_fields=["status"])
            audit_record(
                actor=system_actor("liveness"),
                action="node.offline",
                object_type="node",
                object_id=node.pk,
                details={
                    "name": node.name,
                    "last_heartbeat_at": node.last_heartbeat_at.isoformat()
                    if node.last_heartbeat_at
                    else None,
                },
            )
            marked.append(node.name)
    return marked

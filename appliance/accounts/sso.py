"""Who a person signed in by the organisation's identity provider is in the appliance: their
account (made at their first sign-in), their role (from their groups there, every sign-in), and
whether the provider already asked them for a second factor."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction

from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import Actor, system_actor
from appliance.core.errors import Conflict, NotAuthenticated, PermissionDenied

# The most powerful role a person's groups give wins.
ROLE_ORDER = (Role.ADMIN, Role.OPERATOR, Role.AUDITOR, Role.APP_OWNER)
_USERNAME = re.compile(r"[^\w.@+-]")


def parse_role_groups(entries: Iterable[str], *, casefold: bool = False) -> dict[str, set[str]]:
    """``role=group`` entries as role → groups (unknown roles and blanks dropped); ``casefold``
    for directories, which compare names without case."""
    mapping: dict[str, set[str]] = {}
    for entry in entries:
        role, _, group = (part.strip() for part in entry.partition("="))
        if role in Role.values and group:
            mapping.setdefault(role, set()).add(group.lower() if casefold else group)
    return mapping


def role_groups() -> dict[str, set[str]]:
    """``APPLIANCE_OIDC_ROLE_GROUPS`` ("admin=IT-Admins,operator=IT-Ops") as role → groups."""
    return parse_role_groups(settings.APPLIANCE_OIDC_ROLE_GROUPS)


def role_for(groups: list[str]) -> str | None:
    return role_from(role_groups(), groups)


def role_from(mapping: dict[str, set[str]], groups: list[str]) -> str | None:
    """The most powerful role whose groups the person is in, or None."""
    held = set(groups)
    return next((role for role in ROLE_ORDER if mapping.get(role, set()) & held), None)


def groups_of(claims: dict[str, Any]) -> list[str]:
    value = claims.get(settings.APPLIANCE_OIDC_GROUPS_CLAIM, [])
    if isinstance(value, str):
        return [value]
    return [str(g) for g in value] if isinstance(value, list) else []


def mfa_at_provider(claims: dict[str, Any]) -> bool:
    """Whether the ID token says the person gave a second factor at the provider ("amr")."""
    methods = claims.get("amr", [])
    return isinstance(methods, list) and bool(
        {str(m).lower() for m in methods} & set(settings.APPLIANCE_OIDC_MFA_METHODS)
    )


def _username(claims: dict[str, Any]) -> str:
    raw = str(claims.get("preferred_username") or claims.get("email") or claims["sub"])
    return _USERNAME.sub("_", raw)[:150]


def sso_user(*, claims: dict[str, Any]) -> User:
    """The person the identity provider signed in, from the verified claims."""
    return provision(
        subject=f"{settings.APPLIANCE_OIDC_ISSUER}|{claims['sub']}",
        username=_username(claims),
        role=role_for(groups_of(claims)),
        profile={
            "email": str(claims.get("email", ""))[:254],
            "full_name": str(claims.get("name", ""))[:150],
        },
        source="oidc",
    )


def provision(
    *, subject: str, username: str, role: str | None, profile: dict[str, str], source: str
) -> User:
    """A person known to an outside directory (OIDC or LDAP): their account, made at their first
    sign-in or brought up to date (role, e-mail, name) at every one. A person in no mapped group
    is refused; a local account with the same user name is never taken over."""
    actor = system_actor(f"sign-in via {source}")
    if role is None:
        audit_record(
            actor=actor,
            action="auth.sso",
            outcome=Outcome.DENIED,
            details={"subject": subject, "source": source, "reason": "no_mapped_group"},
        )
        raise PermissionDenied(
            "Your account in the organisation's directory is in no group that has a role here; "
            "ask an administrator.",
            code="sso_no_role",
        )
    with transaction.atomic():
        user = User.objects.select_for_update().filter(sso_subject=subject).first()
        if user is None:
            return _create(actor, subject, username, role, profile, source)
        if not user.is_active:
            raise NotAuthenticated("This account is deactivated.", code="account_inactive")
        changed = {
            name: {"from": getattr(user, name), "to": value}
            for name, value in {"role": role, **profile}.items()
            if getattr(user, name) != value
        }
        if changed:
            for name, change in changed.items():
                setattr(user, name, change["to"])
            user.save(update_fields=list(changed))
            audit_record(
                actor=actor,
                action="user.update",
                object_type="user",
                object_id=user.pk,
                details={"source": source, **{k: v for k, v in changed.items() if k == "role"}},
            )
    return user


def _create(
    actor: Actor, subject: str, username: str, role: str, profile: dict[str, str], source: str
) -> User:
    if User.objects.filter(username=username).exists():
        raise Conflict(
            f"A local account named {username!r} exists; an administrator must resolve it.",
            code="sso_username_taken",
        )
    user = User(username=username, role=role, sso_subject=subject, **profile)
    user.set_unusable_password()  # they sign in with the directory, never a password kept here
    user.save()
    audit_record(
        actor=actor,
        action="user.create",
        object_type="user",
        object_id=user.pk,
        details={"username": username, "role": role, "source": source},
    )
    return user

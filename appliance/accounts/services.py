"""Users, roles, passwords, sign-in and personal API tokens: the only code that changes them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import available_timezones

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from appliance.accounts import throttle
from appliance.accounts.choices import Role
from appliance.accounts.models import ApiToken, User, UserSession
from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import ANONYMOUS, Actor, system_actor
from appliance.core.errors import Conflict, NotAuthenticated, NotFound, Throttled, ValidationFailed
from appliance.core.secrets import (
    find_credential,
    generate_password,
    new_credential,
    pseudonym,
)

TOKEN_KIND = "apt"  # noqa: S105 - a prefix naming the credential kind
MAX_TOKEN_DAYS = 366


def _check_password(password: str, user: User, field: str = "password") -> None:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        raise ValidationFailed(
            "The password does not meet the password rules.", fields={field: list(exc.messages)}
        ) from None


def _check_role(role: str) -> None:
    if role not in Role.values:
        raise ValidationFailed(
            f"Unknown role {role!r}.", fields={"role": [f"Choose one of {', '.join(Role.values)}."]}
        )


def user_create(
    *,
    actor: Actor,
    username: str,
    role: str,
    email: str = "",
    full_name: str = "",
    password: str | None = None,
) -> tuple[User, str | None]:
    """Create an account. Without a password one is generated and returned (shown once)."""
    require(actor, Capability.USERS_MANAGE)
    _check_role(role)
    username = username.strip()
    if not username:
        raise ValidationFailed("A user name is required.", fields={"username": ["Required."]})
    generated = None if password else generate_password()
    user = User(username=username, email=email, full_name=full_name, role=role)
    _check_password(password or generated or "", user)
    with transaction.atomic():
        if User.objects.filter(username__iexact=username).exists():
            raise Conflict(f"A user named {username!r} already exists.", code="duplicate_username")
        user.set_password(password or generated)
        user.save()
        audit_record(
            actor=actor,
            action="user.create",
            object_type="user",
            object_id=user.pk,
            details={"username": user.username, "role": role},
        )
    return user, generated


def _other_active_admins(user: User) -> bool:
    return User.objects.filter(role=Role.ADMIN, is_active=True).exclude(pk=user.pk).exists()


def user_update(
    *,
    actor: Actor,
    user: User,
    role: str | None = None,
    email: str | None = None,
    full_name: str | None = None,
) -> User:
    """Change a user's role or contact details; the last active admin cannot be demoted."""
    require(actor, Capability.USERS_MANAGE)
    changes: dict[str, Any] = {}
    if role is not None and role != user.role:
        _check_role(role)
        if user.role == Role.ADMIN and user.is_active and not _other_active_admins(user):
            raise Conflict("The last active administrator cannot lose the role.", code="last_admin")
        changes["role"] = {"from": user.role, "to": role}
        user.role = role
    if email is not None and email != user.email:
        changes["email"] = {"changed": True}
        user.email = email
    if full_name is not None and full_name != user.full_name:
        changes["full_name"] = {"changed": True}
        user.full_name = full_name
    if not changes:
        return user
    with transaction.atomic():
        user.save(update_fields=["role", "email", "full_name"])
        audit_record(
            actor=actor,
            action="user.update",
            object_type="user",
            object_id=user.pk,
            details=changes,
        )
    return user


def user_set_active(*, actor: Actor, user: User, active: bool) -> User:
    """Deactivate (or reactivate) an account. Deactivation ends its sessions and API tokens."""
    require(actor, Capability.USERS_MANAGE)
    if user.is_active == active:
        return user
    if not active and actor.user_id == user.pk:
        raise Conflict("You cannot deactivate your own account.", code="self_deactivation")
    if not active and user.role == Role.ADMIN and not _other_active_admins(user):
        raise Conflict("The last active administrator cannot be deactivated.", code="last_admin")
    with transaction.atomic():
        user.is_active = active
        user.save(update_fields=["is_active"])
        revoked = 0
        if not active:
            revoked = ApiToken.objects.filter(user=user, revoked_at__isnull=True).update(
                revoked_at=timezone.now()
            )
            _end_sessions(user)
        audit_record(
            actor=actor,
            action="user.activate" if active else "user.deactivate",
            object_type="user",
            object_id=user.pk,
            details={"tokens_revoked": revoked} if not active else {},
        )
    return user


def _end_sessions(user: User) -> None:
    from django.contrib.sessions.models import Session

    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            session.delete()
    UserSession.objects.filter(user=user).delete()


def user_change_password(
    *, actor: Actor, user: User, current_password: str, new_password: str
) -> None:
    """A person changes their own password, proving the current one first."""
    if actor.user_id != user.pk:
        raise NotFound("No such user.")
    if not user.check_password(current_password):
        raise ValidationFailed(
            "The current password is wrong.",
            fields={"current_password": ["The current password is wrong."]},
        )
    _check_password(new_password, user, field="new_password")
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        audit_record(
            actor=actor, action="user.password_change", object_type="user", object_id=user.pk
        )


def user_bootstrap_admin(*, username: str) -> tuple[User, str] | None:
    """Create the first administrator with a generated password, if no user exists yet.

    There is never a fixed default password; the generated one is returned to be shown once.
    """
    with transaction.atomic():
        if User.objects.exists():
            return None
        password = generate_password()
        user = User(username=username, role=Role.ADMIN)
        user.set_password(password)
        user.save()
        audit_record(
            actor=system_actor("bootstrap"),
            action="user.create",
            object_type="user",
            object_id=user.pk,
            details={"username": username, "role": Role.ADMIN, "bootstrap": True},
        )
    return user, password


def password_check(*, username: str, password: str, source_ip: str) -> User:
    """The first step of a sign-in. Failures are counted and audited; unknown and known user
    names get the same answer, and after too many failures every attempt gets 429 until the
    window passes. The sign-in itself is audited when its session opens (after the second
    factor, where there is one)."""
    retry_after = throttle.login_retry_after(username=username, source_ip=source_ip)
    if retry_after:
        audit_record(
            actor=ANONYMOUS,
            action="auth.login",
            outcome=Outcome.DENIED,
            details={"username": pseudonym(username.lower()), "reason": "throttled"},
        )
        raise Throttled(
            "Too many failed sign-in attempts; try again later.", retry_after=retry_after
        )
    user = authenticate(username=username, password=password)
    if not isinstance(user, User):
        throttle.login_failed(username=username, source_ip=source_ip)
        audit_record(
            actor=ANONYMOUS,
            action="auth.login",
            outcome=Outcome.FAILURE,
            details={"username": pseudonym(username.lower()), "reason": "bad_credentials"},
        )
        raise NotAuthenticated("Invalid user name or password.", code="invalid_credentials")
    throttle.login_succeeded(username=username)
    return user


def session_logout(*, actor: Actor, record_id: int | None = None) -> None:
    """Record a sign-out and forget its session record (the caller then ends Django's session)."""
    with transaction.atomic():
        if record_id is not None and actor.user_id is not None:
            UserSession.objects.filter(pk=record_id, user_id=actor.user_id).delete()
        audit_record(
            actor=actor,
            action="auth.logout",
            object_type="user",
            object_id=actor.user_id or "",
            details={"session": record_id} if record_id is not None else None,
        )


def token_create(
    *, actor: Actor, name: str, expires_in_days: int | None = None
) -> tuple[ApiToken, str]:
    """A personal API token for the acting person; the plaintext is returned once."""
    if actor.user is None:
        raise ValidationFailed("Only a person can own an API token.")
    name = name.strip()
    if not name:
        raise ValidationFailed("A token name is required.", fields={"name": ["Required."]})
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise ValidationFailed(
            "Bad expiry.", fields={"expires_in_days": [f"Between 1 and {MAX_TOKEN_DAYS} days."]}
        )
    plaintext, prefix, secret_hash = new_credential(TOKEN_KIND)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=actor.user,
            name=name,
            prefix=prefix,
            secret_hash=secret_hash,
            expires_at=expires_at,
        )
        audit_record(
            actor=actor,
            action="token.create",
            object_type="api_token",
            object_id=token.pk,
            details={
                "prefix": prefix,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return token, plaintext


def token_revoke(*, actor: Actor, token: ApiToken) -> ApiToken:
    """Revoke a token: its owner or an admin. Effective on the next request."""
    if token.user_id != actor.user_id:
        require(actor, Capability.USERS_MANAGE)
    if token.revoked_at is not None:
        return token
    with transaction.atomic():
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="token.revoke",
            object_type="api_token",
            object_id=token.pk,
            details={"prefix": token.prefix},
        )
    return token


TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


def token_authenticate(*, plaintext: str) -> ApiToken | None:
    """The live token this plaintext proves, or None (unknown, wrong, revoked, expired, or its
    owner deactivated). Records last use at most once a minute."""
    token = find_credential(
        ApiToken.objects.select_related("user"), plaintext, TOKEN_KIND, hash_field="secret_hash"
    )
    if token is None:
        return None
    now = timezone.now()
    if token.revoked_at or (token.expires_at and token.expires_at <= now):
        return None
    if not token.user.is_active:
        return None
    if token.last_used_at is None or now - token.last_used_at > TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def user_set_time_zone(*, actor: Actor, user: User, time_zone: str) -> User:
    """A person picks the time zone the console shows times in (IANA names, e.g. Europe/Berlin)."""
    if actor.user_id != user.pk:
        raise NotFound("No such user.")
    if time_zone not in available_timezones():
        raise ValidationFailed(
            "Unknown time zone.", fields={"time_zone": ["Pick a time zone from the list."]}
        )
    with transaction.atomic():
        before = user.time_zone
        user.time_zone = time_zone
        user.save(update_fields=["time_zone"])
        audit_record(
            actor=actor,
            action="user.time_zone_change",
            object_type="user",
            object_id=user.pk,
            details={"from": before, "to": time_zone},
        )
    return user

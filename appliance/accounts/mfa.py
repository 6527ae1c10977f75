"""Second factor: TOTP enrolment, verification at sign-in, recovery codes, and an admin's reset of
a person's authenticator. The only code that changes TotpDevice and RecoveryCode rows."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from appliance.accounts import totp
from appliance.accounts.actors import actor_for_user
from appliance.accounts.choices import Role
from appliance.accounts.models import RecoveryCode, TotpDevice, User
from appliance.accounts.permissions import Capability, require
from appliance.audit.choices import Outcome
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.crypto import unwrap, wrap
from appliance.core.errors import Conflict, NotAuthenticated, Throttled, ValidationFailed
from appliance.core.secrets import hash_credential, pseudonym
from appliance.core.throttle import count_failure, retry_after

ISSUER = "Model appliance"
RECOVERY_CODES = 10
SECRET_PURPOSE = "accounts.totp"  # noqa: S105 - a wrapping purpose label, not a secret
MFA_REQUIRED_ROLES = frozenset({Role.ADMIN})


class Method:
    """How a second factor was given (kept on the session and the sign-in event)."""

    TOTP = "totp"
    RECOVERY = "recovery_code"
    NONE = ""


def mfa_required(user: User) -> bool:
    """Whether the person may not sign in without an authenticator (admins)."""
    return user.role in MFA_REQUIRED_ROLES


class Step:
    """What a person who proved who they are once still owes before they are signed in."""

    CODE = "code"  # their authenticator's code (or a recovery code)
    ENROL = "enrol"  # setting up an authenticator, which their role needs
    NONE = "none"


def second_step(user: User) -> str:
    if mfa_enrolled(user):
        return Step.CODE
    return Step.ENROL if mfa_required(user) else Step.NONE


def mfa_enrolled(user: User) -> bool:
    return TotpDevice.objects.filter(user=user, confirmed_at__isnull=False).exists()


def _purpose(user: User) -> str:
    # Bound to the user: a wrapped secret copied to another person's row does not unwrap.
    return f"{SECRET_PURPOSE}:{user.pk}"


def device_secret(device: TotpDevice) -> str:
    return unwrap(device.secret_wrapped, purpose=_purpose(device.user)).decode("ascii")


def totp_begin(*, user: User) -> str:
    """Start enrolment: a new secret for the person's authenticator app, kept unconfirmed until
    a first code proves the app has it. Starting again replaces an unconfirmed secret."""
    secret = totp.new_secret()
    with transaction.atomic():
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        if device is not None and device.confirmed_at is not None:
            raise Conflict("An authenticator is already set up.", code="mfa_already_enrolled")
        wrapped = wrap(secret.encode("ascii"), purpose=_purpose(user))
        TotpDevice.objects.update_or_create(
            user=user, defaults={"secret_wrapped": wrapped, "last_step": 0}
        )
        audit_record(
            actor=actor_for_user(user),
            action="auth.mfa_enrol_start",
            object_type="user",
            object_id=user.pk,
        )
    return secret


def provisioning_uri(*, user: User, secret: str) -> str:
    return totp.provisioning_uri(secret, account=user.username, issuer=ISSUER)


def totp_confirm(*, user: User, code: str) -> list[str]:
    """Finish enrolment with a first code; returns the recovery codes, shown once."""
    with transaction.atomic():
        device = TotpDevice.objects.select_for_update().filter(user=user).first()
        if device is None or device.confirmed_at is not None:
            raise Conflict("There is no authenticator being set up.", code="mfa_not_enrolling")
        step = totp.matching_step(device_secret(device), code, after=0)
        if step is None:
            raise ValidationFailed(
                "That code is not right.",
                code="invalid_mfa_code",
                fields={"code": ["Enter the 6-digit code your authenticator app shows now."]},
            )
        device.confirmed_at, device.last_step = timezone.now(), step
        device.save(update_fields=["confirmed_at", "last_step"])
        codes = _new_recovery_codes(user)
        audit_record(
            actor=actor_for_user(user),
            action="auth.mfa_enrol",
            object_type="user",
            object_id=user.pk,
            details={"method": Method.TOTP, "recovery_codes": len(codes)},
        )
    return codes


def _new_recovery_codes(user: User) -> list[str]:
    RecoveryCode.objects.filter(user=user).delete()
    codes = [_recovery_code() for _ in range(RECOVERY_CODES)]
    RecoveryCode.objects.bulk_create(
        RecoveryCode(user=user, code_hash=hash_credential(_normal(code))) for code in codes
    )
    return codes


def _recovery_code() -> str:
    raw = secrets.token_hex(5)  # 40 bits each; ten of them, each usable once
    return f"{raw[:5]}-{raw[5:]}"


def _normal(code: str) -> str:
    return "".join(code.split()).replace("-", "").lower()


def recovery_codes_regenerate(*, actor: Actor, user: User) -> list[str]:
    """New recovery codes for oneself; the old ones stop working."""
    if actor.user_id != user.pk:
        raise Conflict("Recovery codes are made by their owner.", code="not_own_account")
    if not mfa_enrolled(user):
        raise Conflict("Set up an authenticator first.", code="mfa_not_enrolled")
    with transaction.atomic():
        codes = _new_recovery_codes(user)
        audit_record(
            actor=actor,
            action="auth.recovery_codes_regenerate",
            object_type="user",
            object_id=user.pk,
            details={"recovery_codes": len(codes)},
        )
    return codes


def recovery_codes_left(user: User) -> int:
    return RecoveryCode.objects.filter(user=user, used_at__isnull=True).count()


def _throttle_key(user: User) -> str:
    return f"mfa-fail:user:{user.pk}"


def mfa_verify(*, user: User, code: str) -> str:
    """Check the second factor at sign-in: a current TOTP code (each usable once) or an unused
    recovery code. Failures are counted per person and audited; too many give 429."""
    key = _throttle_key(user)
    wait = retry_after(key, settings.APPLIANCE_LOGIN_MAX_FAILURES)
    if wait:
        _audit_failure(user, "throttled", Outcome.DENIED)
        raise Throttled("Too many wrong codes; try again later.", retry_after=wait)
    with transaction.atomic():
        method = _use_code(user, code)
        if method == Method.RECOVERY:
            audit_record(
                actor=actor_for_user(user),
                action="auth.recovery_code_use",
                object_type="user",
                object_id=user.pk,
                details={"left": recovery_codes_left(user)},
            )
    if method is None:  # audited outside the transaction above, which wrote nothing
        count_failure(key, settings.APPLIANCE_LOGIN_WINDOW_SECONDS)
        _audit_failure(user, "bad_code", Outcome.FAILURE)
        raise NotAuthenticated("That code is not right.", code="invalid_mfa_code")
    cache.delete(key)
    return method


def _use_code(user: User, code: str) -> str | None:
    device = (
        TotpDevice.objects.select_for_update().filter(user=user, confirmed_at__isnull=False).first()
    )
    if device is None:
        return None
    step = totp.matching_step(device_secret(device), code, after=device.last_step)
    if step is not None:
        device.last_step = step
        device.save(update_fields=["last_step"])
        return Method.TOTP
    used = RecoveryCode.objects.filter(
        user=user, used_at__isnull=True, code_hash=hash_credential(_normal(code))
    ).update(used_at=timezone.now())
    return Method.RECOVERY if used else None


def _audit_failure(user: User, reason: str, outcome: str) -> None:
    audit_record(
        actor=actor_for_user(user),
        action="auth.mfa",
        object_type="user",
        object_id=user.pk,
        outcome=outcome,
        details={"username": pseudonym(user.username.lower()), "reason": reason},
    )


def mfa_reset(*, actor: Actor, user: User) -> None:
    """An admin removes a person's authenticator and recovery codes (a lost phone); an admin
    must set up a new one at their next sign-in."""
    require(actor, Capability.USERS_MANAGE)
    with transaction.atomic():
        removed, _ = TotpDevice.objects.filter(user=user).delete()
        RecoveryCode.objects.filter(user=user).delete()
        if not removed:
            raise Conflict("That person has no authenticator.", code="mfa_not_enrolled")
        audit_record(actor=actor, action="auth.mfa_reset", object_type="user", object_id=user.pk)

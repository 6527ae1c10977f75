"""People who use the console and API, and their personal API tokens."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models

from appliance.accounts.choices import Role


class User(AbstractUser):
    """A person. Their ``role`` decides what services let them do; Django's staff and superuser
    flags are not used for that (there is no Django admin site)."""

    role = models.CharField(max_length=16, choices=Role.choices, default=Role.APP_OWNER)
    full_name = models.CharField(max_length=150, blank=True)
    time_zone = models.CharField(max_length=64, default="UTC")  # the console shows times in it
    # "<issuer>|<sub>" for a person who signs in through the organisation's identity provider
    # (single sign-on); their role follows their groups there.
    sso_subject = models.CharField(max_length=400, unique=True, null=True, blank=True)

    class Meta:
        ordering = ["username"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=Role.values), name="accounts_user_role_valid"
            )
        ]


class ApiToken(models.Model):
    """A personal API token for scripts. Only its prefix and SHA-256 hash are stored; the token is
    shown once at creation. It acts with its owner's role."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class TotpDevice(models.Model):
    """A person's authenticator (TOTP). The secret is wrapped by the master key; it is usable
    once confirmed with a first code. ``last_step`` stops a code from being used twice."""

    user = models.OneToOneField(User, on_delete=models.CASCADE, related_name="totp_device")
    secret_wrapped = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    last_step = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"TOTP of {self.user_id}"


class RecoveryCode(models.Model):
    """A one-time code for a lost authenticator: only its hash is kept; shown once."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="recovery_codes")
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"recovery code {self.pk} of {self.user_id}"


class UserSession(models.Model):
    """A signed-in browser or script session, so a person can see and end their own sessions
    and the idle and absolute limits are enforced on the server. Django's session names its row;
    the session key itself is not copied here. Deleting the row ends the session at its next
    request."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    source_ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=200, blank=True)
    mfa = models.CharField(max_length=16, blank=True)  # how the second factor was given

    class Meta:
        ordering = ["-last_seen_at", "-pk"]

    def __str__(self) -> str:
        return f"session {self.pk} of {self.user_id}"


class BreakGlass(models.Model):
    """Emergency access: an admin lets a person act as an admin for a short time, with a stated
    reason and the granting admin's second factor. It ends by itself at ``expires_at`` (or
    earlier, by an admin); every step is a high-severity audit event."""

    user = models.ForeignKey(User, on_delete=models.PROTECT, related_name="break_glass")
    granted_by = models.ForeignKey(User, on_delete=models.PROTECT, related_name="+")
    reason = models.TextField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)
    started_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)  # ended early
    ended_by = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    expiry_recorded = models.BooleanField(default=False)  # its expiry event is written

    class Meta:
        ordering = ["-started_at", "-pk"]
        indexes = [models.Index(fields=["user", "expires_at"])]

    def __str__(self) -> str:
        return f"break-glass {self.pk} for {self.user_id}"

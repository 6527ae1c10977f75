"""Reading stored content, erasing a data subject, rotating the master key.

Content is written by the gateway (appliance.privacy.capture, with the usage record); everything
that reads it or destroys keys is here, audited in the same transaction. Audit details name
subjects by pseudonym only and never carry content or keys.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from django.db import transaction
from django.db.models import Count, Max, Min, Model
from django.utils import timezone

from appliance.access.models import Application
from appliance.accounts.mfa import SECRET_PURPOSE as TOTP_PURPOSE
from appliance.accounts.models import TotpDevice
from appliance.accounts.permissions import Capability, allows, require
from appliance.audit.keys import PURPOSE as SIGNING_KEY_PURPOSE
from appliance.audit.models import AuditSigningKey
from appliance.audit.retention import legal_hold_covering
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.crypto import KeyUnavailable, current_master_key_id, unwrap, wrap, wrapped_by
from appliance.core.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from appliance.privacy import selectors
from appliance.privacy.choices import ContentKind
from appliance.privacy.errors import ContentErased, ContentIntegrityFailed, MasterKeyUnavailable
from appliance.privacy.keys import SUBJECT_RULE, subject_pseudonym, subject_valid, unseal
from appliance.privacy.models import StoredContent, SubjectKey, content_aad
from appliance.routing.evaluations import ITEMS_PURPOSE
from appliance.routing.models import EvaluationSet

ROTATION_BATCH = 500
M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class StoredExchange:
    """One request's kept content. ``prompt`` is the JSON the client sent (messages, prompt or
    input); ``completions`` the text of each choice. Both None once the subject is erased."""

    application_id: int
    usage_record_id: int | None
    time: datetime
    subject: str  # the pseudonym
    erased: bool
    prompt: Any = None
    completions: list[str] | None = None


@dataclass(frozen=True)
class ContentRead:
    request_id: str
    exchanges: list[StoredExchange]


def _plaintext(key: bytes, row: StoredContent) -> Any:
    aad = content_aad(row.application_id, row.request_id, row.kind)
    try:
        plaintext = unseal(key, bytes(row.ciphertext), aad)
    except InvalidTag:
        raise ContentIntegrityFailed(
            "Stored content failed authentication: it was altered, or moved from another row."
        ) from None
    return json.loads(plaintext.decode("utf-8", "surrogatepass"))


def _data_key(subject_key: SubjectKey) -> bytes:
    try:
        return unwrap(subject_key.wrapped_key, purpose=subject_key.purpose)
    except KeyUnavailable as exc:
        raise MasterKeyUnavailable(
            f"The subject's data key cannot be unwrapped ({exc}). Configure the master key that "
            "wrapped it in APPLIANCE_MASTER_KEY or APPLIANCE_MASTER_KEY_PREVIOUS."
        ) from None


def _exchange(rows: list[StoredContent]) -> StoredExchange:
    first = rows[0]
    subject_key = first.subject_key
    exchange: dict[str, Any] = {
        "application_id": first.application_id,
        "usage_record_id": first.usage_record_id,
        "time": first.usage_record.time if first.usage_record else first.created_at,
        "subject": subject_key.subject,
        "erased": subject_key.erased_at is not None,
    }
    if not exchange["erased"]:
        key = _data_key(subject_key)
        for row in rows:
            field = "prompt" if row.kind == ContentKind.PROMPT else "completions"
            exchange[field] = _plaintext(key, row)
    return StoredExchange(**exchange)


def content_read(*, actor: Actor, request_id: str) -> ContentRead:
    """The decrypted prompt and completion of a request, for an admin; every read is audited."""
    require(actor, Capability.CONTENT_READ)
    groups: dict[tuple[int | None, int], list[StoredContent]] = {}
    for row in selectors.stored_content_for_request(request_id=request_id):
        groups.setdefault((row.usage_record_id, row.subject_key_id), []).append(row)
    if not groups:
        raise NotFound("No content is stored for this request id.")
    exchanges = [_exchange(rows) for rows in groups.values()]
    if all(exchange.erased for exchange in exchanges):
        raise ContentErased(
            "This request's content was erased: its data subject's key was destroyed."
        )
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="content.read",
            object_type="request",
            object_id=request_id,
            details={
                "request_id": request_id,
                "exchanges": len(exchanges),
                "applications": sorted({e.application_id for e in exchanges}),
                "subjects": sorted({e.subject for e in exchanges if not e.erased}),
            },
        )
    return ContentRead(request_id=request_id, exchanges=exchanges)


@dataclass(frozen=True)
class SubjectErasure:
    application_id: int
    subject: str  # the pseudonym
    erased_at: datetime
    content_rows: int  # rows made unreadable


def _require_eraser(actor: Actor, application: Application) -> None:
    """An admin, or the application's owner."""
    if allows(actor, Capability.CONTENT_ERASE):
        return
    require(actor, Capability.APPS_OWN)
    if application.owner_id != actor.user_id:
        raise PermissionDenied("Only the application's owner or an admin may erase its content.")


def subject_erase(*, actor: Actor, application: Application, subject: str | None) -> SubjectErasure:
    """Destroy a data subject's key (GDPR Art. 17): every row encrypted under it becomes
    unreadable at once, backups' copies included once the master key that wrapped it is retired.
    ``subject`` None is the application's own key (content sent without a subject header)."""
    _require_eraser(actor, application)
    if subject is not None and not subject_valid(subject):
        raise ValidationFailed("Bad subject.", fields={"subject": [f"{SUBJECT_RULE}."]})
    name = subject_pseudonym(subject)
    with transaction.atomic():
        key = (
            SubjectKey.objects.select_for_update()
            .filter(application=application, subject=name, erased_at__isnull=True)
            .first()
        )
        if key is None:
            if SubjectKey.objects.filter(application=application, subject=name).exists():
                raise Conflict(
                    "This subject was erased already, and nothing has been stored for it since.",
                    code="already_erased",
                )
            raise NotFound(
                "No content is stored for this subject in this application.",
                code="subject_not_found",
            )
        span = key.content.aggregate(
            first=Min("created_at"), last=Max("created_at"), rows=Count("pk")
        )
        hold = legal_hold_covering(
            application_id=application.pk, first=span["first"], last=span["last"]
        )
        if hold is not None:
            raise Conflict(
                f"Legal hold {hold.name!r} keeps this application's data; release it before "
                "erasing (GDPR Art. 17(3)(e)).",
                code="legal_hold",
            )
        rows = span["rows"]
        key.wrapped_key = ""
        key.erased_at = timezone.now()
        key.save(update_fields=["wrapped_key", "erased_at"])
        audit_record(
            actor=actor,
            action="privacy.subject_erase",
            object_type="application",
            object_id=application.pk,
            details={"application": application.name, "subject": name, "content_rows": rows},
        )
    return SubjectErasure(
        application_id=application.pk, subject=name, erased_at=key.erased_at, content_rows=rows
    )


@dataclass(frozen=True)
class MasterKeyRotation:
    new_key_id: str
    previous_key_ids: list[str]  # the master keys that wrapped what was re-wrapped
    subject_keys: int  # re-wrapped
    signing_keys: int  # re-wrapped
    already_current: int  # wrapped by the current master key already
    evaluation_sets: int = 0  # re-wrapped
    totp_secrets: int = 0  # re-wrapped


class _Rewrap:
    """Re-wraps values under the current master key, counting what it saw."""

    def __init__(self) -> None:
        self.current = current_master_key_id()
        self.previous: set[str] = set()
        self.already_current = 0

    def __call__(self, wrapped: str, purpose: str) -> str | None:
        """The value wrapped anew, or None if the current key wraps it already."""
        old = wrapped_by(wrapped)
        if old == self.current:
            self.already_current += 1
            return None
        try:
            plain = unwrap(wrapped, purpose=purpose)
        except KeyUnavailable as exc:
            raise MasterKeyUnavailable(
                f"A key cannot be unwrapped ({exc}); nothing was changed. Put the master key "
                "that wrapped it in APPLIANCE_MASTER_KEY_PREVIOUS and rotate again."
            ) from None
        self.previous.add(old)
        return wrap(plain, purpose=purpose)


def _rewrap_subject_keys(rewrap: _Rewrap) -> int:
    count, last = 0, 0
    live = SubjectKey.objects.select_for_update().filter(erased_at__isnull=True).order_by("pk")
    while batch := list(live.filter(pk__gt=last)[:ROTATION_BATCH]):
        changed = _changed(batch, "wrapped_key", lambda row: rewrap(row.wrapped_key, row.purpose))
        SubjectKey.objects.bulk_update(changed, ["wrapped_key"])
        count += len(changed)
        last = batch[-1].pk
    return count


def _rewrap_signing_keys(rewrap: _Rewrap) -> int:
    rows = list(AuditSigningKey.objects.select_for_update().order_by("pk"))
    changed = _changed(
        rows,
        "private_key",
        lambda row: rewrap(row.private_key, f"{SIGNING_KEY_PURPOSE}:{row.fingerprint}"),
    )
    AuditSigningKey.objects.bulk_update(changed, ["private_key"])
    return len(changed)


def _rewrap_evaluation_sets(rewrap: _Rewrap) -> int:
    """Evaluation sets' items (the customer's own prompts) are wrapped by the master key too."""
    rows = list(EvaluationSet.objects.select_for_update().order_by("pk"))
    changed = _changed(
        rows,
        "items_sealed",
        lambda row: rewrap(row.items_sealed, f"{ITEMS_PURPOSE}:{row.sha256}"),
    )
    EvaluationSet.objects.bulk_update(changed, ["items_sealed"])
    return len(changed)


def _rewrap_totp_secrets(rewrap: _Rewrap) -> int:
    """People's authenticator secrets are wrapped by the master key too."""
    rows = list(TotpDevice.objects.select_for_update().select_related("user").order_by("pk"))
    changed = _changed(
        rows,
        "secret_wrapped",
        lambda row: rewrap(row.secret_wrapped, f"{TOTP_PURPOSE}:{row.user_id}"),
    )
    TotpDevice.objects.bulk_update(changed, ["secret_wrapped"])
    return len(changed)


def _changed(rows: Iterable[M], field: str, new_value: Any) -> list[M]:
    changed = []
    for row in rows:
        value = new_value(row)
        if value is not None:
            setattr(row, field, value)
            changed.append(row)
    return changed


def master_key_rotate(*, actor: Actor) -> MasterKeyRotation:
    """Re-wrap every live subject key and every audit signing key under the current master key,
    in one transaction; stored content is not touched (its data keys do not change). Once it has
    run, the previous master key can be removed from APPLIANCE_MASTER_KEY_PREVIOUS."""
    require(actor, Capability.MASTER_KEY_ROTATE)
    rewrap = _Rewrap()
    with transaction.atomic():
        subject_keys = _rewrap_subject_keys(rewrap)
        signing_keys = _rewrap_signing_keys(rewrap)
        evaluation_sets = _rewrap_evaluation_sets(rewrap)
        totp_secrets = _rewrap_totp_secrets(rewrap)
        result = MasterKeyRotation(
            new_key_id=rewrap.current,
            previous_key_ids=sorted(rewrap.previous),
            subject_keys=subject_keys,
            signing_keys=signing_keys,
            already_current=rewrap.already_current,
            evaluation_sets=evaluation_sets,
            totp_secrets=totp_secrets,
        )
        audit_record(
            actor=actor,
            action="privacy.master_key_rotate",
            object_type="master_key",
            object_id=result.new_key_id,
            details={
                "new_key_id": result.new_key_id,
                "previous_key_ids": result.previous_key_ids,
                "subject_keys": subject_keys,
                "signing_keys": signing_keys,
                "evaluation_sets": evaluation_sets,
                "totp_secrets": totp_secrets,
                "already_current": result.already_current,
            },
        )
    return result

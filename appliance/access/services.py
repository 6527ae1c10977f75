"""Applications, their API keys and grants: who may call the gateway, for which models.

An application's owner (an app owner, or whoever an admin or operator names) creates its keys;
only admins and operators set its limits and data policy or grant it models, so nobody raises
their own ceiling. Keys are ``apk_…`` credentials stored as prefix + sha256.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from appliance.access.choices import ApplicationStatus, DataClassification, DataPolicy
from appliance.access.models import ApiKey, Application, Grant
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.accounts.permissions import Capability, allows, require
from appliance.audit.services import audit_record
from appliance.core.actors import Actor
from appliance.core.changes import access_changed
from appliance.core.errors import Conflict, PermissionDenied, ValidationFailed
from appliance.core.secrets import find_credential, new_credential
from appliance.registry.choices import EntryStatus
from appliance.registry.models import Adapter, BaseModel
from appliance.routing.models import Route

KEY_KIND = "apk"
MAX_KEY_DAYS = 366
LIMITS = (
    "requests_per_minute",
    "tokens_per_minute",
    "monthly_token_budget",
    "max_concurrent_requests",
    "max_tokens_per_request",
)
OWNER_FIELDS = frozenset({"description", "department"})
MANAGER_FIELDS = frozenset(
    {*OWNER_FIELDS, *LIMITS, "data_classification", "data_policy", "status", "owner"}
)
OWNER_ROLES = (Role.APP_OWNER, Role.ADMIN)
POLICY_FIELDS = frozenset({*LIMITS, "data_classification", "data_policy", "status"})


def _require_owner_or_manager(actor: Actor, application: Application) -> None:
    """The application's owner, or an admin or operator."""
    if allows(actor, Capability.APPS_MANAGE):
        return
    require(actor, Capability.APPS_OWN)
    if application.owner_id != actor.user_id:
        raise PermissionDenied("Only the application's owner, an admin or an operator may.")


def _check_owner(owner: User) -> User:
    if not owner.is_active or owner.role not in OWNER_ROLES:
        raise ValidationFailed(
            "The owner must be an active app owner or admin.",
            fields={"owner_id": ["Not an active app owner or admin."]},
        )
    return owner


def _check_choices(values: dict[str, Any]) -> None:
    """Classification, policy and status from their choices; required fields not null."""
    for name, choices in (
        ("data_classification", DataClassification.values),
        ("data_policy", DataPolicy.values),
        ("status", ApplicationStatus.values),
    ):
        if name in values and values[name] not in choices:
            raise ValidationFailed(
                f"Unknown {name}.", fields={name: [f"One of {', '.join(choices)}."]}
            )
    for name, field in (("description",) * 2, ("department",) * 2, ("owner", "owner_id")):
        if name in values and values[name] is None:
            raise ValidationFailed(f"{field} cannot be null.", fields={field: ["Required."]})


def _check_limits(values: dict[str, Any]) -> None:
    for name in LIMITS:
        value = values.get(name)
        if value is not None and value < 1:
            raise ValidationFailed(
                "Limits are positive, or null for none.", fields={name: ["≥ 1."]}
            )


def application_create(
    *,
    actor: Actor,
    name: str,
    owner: User | None = None,
    description: str = "",
    department: str = "",
    data_classification: str = DataClassification.INTERNAL,
    data_policy: str = DataPolicy.NO_CONTENT,
    **limits: int | None,
) -> Application:
    """A new application. App owners create their own; admins and operators may name the owner
    and set limits at once."""
    require(actor, Capability.APPS_OWN)
    manager = allows(actor, Capability.APPS_MANAGE)
    if owner is None:
        if actor.user is None:
            raise ValidationFailed("Name the owner.", fields={"owner_id": ["Required."]})
        owner = actor.user
    if owner.pk != actor.user_id and not manager:
        raise PermissionDenied("You may create applications for yourself only.")
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ValidationFailed("Unknown fields.", fields={k: ["Unknown."] for k in unknown})
    if not manager and (
        any(v is not None for v in limits.values()) or data_policy != DataPolicy.NO_CONTENT
    ):
        raise PermissionDenied("Limits and data policies are set by an admin or operator.")
    _check_limits(limits)
    _check_choices({"data_classification": data_classification, "data_policy": data_policy})
    name = name.strip()
    if not name:
        raise ValidationFailed("A name is required.", fields={"name": ["Required."]})
    if Application.objects.filter(name=name).exists():
        raise Conflict(f"The name {name!r} is already taken.", code="duplicate_name")
    with transaction.atomic():
        try:
            with transaction.atomic():
                application = Application.objects.create(
                    name=name,
                    owner=_check_owner(owner),
                    description=description,
                    department=department,
                    data_classification=data_classification,
                    data_policy=data_policy,
                    created_by=actor.user,
                    **limits,
                )
        except IntegrityError as exc:
            raise Conflict(f"The name {name!r} is already taken.", code="duplicate_name") from exc
        audit_record(
            actor=actor,
            action="application.create",
            object_type="application",
            object_id=application.pk,
            details=_snapshot(application),
        )
    return application


def _snapshot(application: Application) -> dict[str, Any]:
    return {
        "name": application.name,
        "owner_id": application.owner_id,
        "department": application.department,
        "data_classification": application.data_classification,
        "data_policy": application.data_policy,
        "status": application.status,
        **{name: getattr(application, name) for name in LIMITS},
    }


def application_update(*, actor: Actor, application: Application, **changes: Any) -> Application:
    """Change an application; its owner only the description and department."""
    unknown = set(changes) - MANAGER_FIELDS
    if unknown:
        raise ValidationFailed("Unknown fields.", fields={k: ["Unknown."] for k in unknown})
    if set(changes) - OWNER_FIELDS:
        require(actor, Capability.APPS_MANAGE)
    else:
        _require_owner_or_manager(actor, application)
    _check_limits(changes)
    _check_choices(changes)
    if "owner" in changes:
        _check_owner(changes["owner"])
    with transaction.atomic():
        application = Application.objects.select_for_update().get(pk=application.pk)
        before = _snapshot(application)
        old_description = application.description
        for name, value in changes.items():
            setattr(application, name, value)
        after = _snapshot(application)
        changed: dict[str, Any] = {
            k: {"from": before[k], "to": after[k]} for k in after if before[k] != after[k]
        }
        if application.description != old_description:
            changed["description"] = {"changed": True}  # free text: not copied into the log
        if not changed:
            return application
        if POLICY_FIELDS & set(changed):
            application.policy_version += 1
        application.save()
        access_changed()
        audit_record(
            actor=actor,
            action="application.update",
            object_type="application",
            object_id=application.pk,
            details={"name": application.name, "changed": changed},
        )
    return application


def api_key_create(
    *, actor: Actor, application: Application, name: str, expires_in_days: int | None = None
) -> tuple[ApiKey, str]:
    """A key for the gateway; the plaintext is returned once."""
    _require_owner_or_manager(actor, application)
    name = name.strip()
    if not name:
        raise ValidationFailed("A key name is required.", fields={"name": ["Required."]})
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_KEY_DAYS:
        raise ValidationFailed(
            "Bad expiry.", fields={"expires_in_days": [f"Between 1 and {MAX_KEY_DAYS} days."]}
        )
    plaintext, prefix, key_hash = new_credential(KEY_KIND)
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    with transaction.atomic():
        key = ApiKey.objects.create(
            application=application,
            name=name,
            prefix=prefix,
            key_hash=key_hash,
            created_by=actor.user,
            expires_at=expires_at,
        )
        audit_record(
            actor=actor,
            action="api_key.create",
            object_type="api_key",
            object_id=key.pk,
            details={
                "application": application.name,
                "prefix": prefix,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
    return key, plaintext


def api_key_revoke(*, actor: Actor, key: ApiKey) -> ApiKey:
    """Revoke a key; the gateway refuses it from the next request."""
    _require_owner_or_manager(actor, key.application)
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().select_related("application").get(pk=key.pk)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            access_changed()
            audit_record(
                actor=actor,
                action="api_key.revoke",
                object_type="api_key",
                object_id=key.pk,
                details={"application": key.application.name, "prefix": key.prefix},
            )
    return key


def api_key_authenticate(*, plaintext: str) -> ApiKey | None:
    """The usable key behind this plaintext: not revoked, not expired, application active."""
    key = find_credential(
        ApiKey.objects.select_related("application"), plaintext, KEY_KIND, hash_field="key_hash"
    )
    if key is None:
        return None
    if key.revoked_at is not None or (key.expires_at and key.expires_at <= timezone.now()):
        return None
    if key.application.status != ApplicationStatus.ACTIVE:
        return None
    return key


def grant_create(
    *,
    actor: Actor,
    application: Application,
    model: BaseModel | None = None,
    adapter: Adapter | None = None,
    route: Route | None = None,
) -> Grant:
    """Let an application use an approved model, one approved adapter of it, or a route (and
    through it, only through it, whatever the route selects)."""
    require(actor, Capability.APPS_MANAGE)
    grant_target_check(
        model=model is not None, adapter=adapter is not None, route=route is not None
    )
    if route is not None:
        return _grant_write(actor, application, Grant(application=application, route=route))
    assert model is not None
    for entry in (model, adapter):
        if entry is not None and entry.status != EntryStatus.APPROVED:
            raise Conflict(f"{entry.name} is {entry.status}, not approved.", code="not_approved")
    if adapter is not None and adapter.base_model_id != model.pk:
        raise ValidationFailed(
            f"Adapter {adapter.name} is not an adapter of {model.name}.",
            code="wrong_base_model",
            fields={"adapter_id": ["Not an adapter of this model."]},
        )
    return _grant_write(
        actor, application, Grant(application=application, model=model, adapter=adapter)
    )


def grant_target_check(*, model: bool, adapter: bool, route: bool) -> None:
    """A grant names a model (with one of its adapters, or not) or a route: which ones are given
    is checked before anything is looked up."""
    if model == route:
        raise ValidationFailed(
            "Name either a model (with an adapter or not) or a route.",
            fields={"model_id": ["Either this or route_id."], "route_id": ["Or this."]},
        )
    if route and adapter:
        raise ValidationFailed(
            "An adapter goes with a model, not a route.",
            fields={"adapter_id": ["Only with model_id."]},
        )


def _grant_details(grant: Grant) -> dict[str, Any]:
    return {
        "application": grant.application.name,
        "model": grant.model.name if grant.model else None,
        "adapter": grant.adapter.name if grant.adapter else None,
        "route": grant.route.name if grant.route else None,
    }


def _grant_write(actor: Actor, application: Application, grant: Grant) -> Grant:
    grant.created_by = actor.user
    with transaction.atomic():
        try:
            with transaction.atomic():
                grant.save()
        except IntegrityError as exc:
            raise Conflict(
                "The application has this grant already.", code="duplicate_grant"
            ) from exc
        _policy_changed(application)
        audit_record(
            actor=actor,
            action="grant.create",
            object_type="grant",
            object_id=grant.pk,
            details=_grant_details(grant),
        )
    return grant


def grant_delete(*, actor: Actor, grant: Grant) -> None:
    """Withdraw a grant; the gateway refuses the model from the next request."""
    require(actor, Capability.APPS_MANAGE)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action="grant.delete",
            object_type="grant",
            object_id=grant.pk,
            details=_grant_details(grant),
        )
        grant.delete()
        _policy_changed(grant.application)


def _policy_changed(application: Application) -> None:
    """A new policy version for the application (its grants changed); gateways drop caches."""
    Application.objects.filter(pk=application.pk).update(policy_version=F("policy_version") + 1)
    access_changed()

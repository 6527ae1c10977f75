"""Applications API (/api/v1/applications): applications, their API keys and grants."""

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status
from ninja.pagination import paginate

from appliance.access import selectors, services
from appliance.access.models import ApiKey, Application
from appliance.access.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    ApplicationIn,
    ApplicationOut,
    ApplicationPatchIn,
    GrantIn,
    GrantOut,
)
from appliance.accounts.models import User
from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.registry import selectors as registry_selectors
from appliance.routing import selectors as routing_selectors

router = Router(tags=["applications"])

READ_ERRORS = error_responses(401, 403, 404)
WRITE_ERRORS = error_responses(401, 403, 404, 409, 422)


def _application(request: HttpRequest, application_id: int) -> Application:
    """The application, if the caller may see it; someone else's looks missing."""
    return get_or_404(
        selectors.application_list(actor=actor_of(request)), "application", pk=application_id
    )


def _owner(owner_id: int) -> User:
    return get_or_404(User.objects.all(), "user", pk=owner_id)


@router.get("", response={200: list[ApplicationOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_applications(request: HttpRequest) -> Any:
    return selectors.application_list(actor=actor_of(request))


@router.post("", response={201: ApplicationOut, **WRITE_ERRORS})
def create_application(request: HttpRequest, payload: ApplicationIn) -> Status[Any]:
    """An application calling the gateway. App owners create their own; limits and data policy
    are set by an admin or operator."""
    data = payload.dict()
    owner_id = data.pop("owner_id")
    application = services.application_create(
        actor=actor_of(request), owner=_owner(owner_id) if owner_id else None, **data
    )
    return Status(201, application)


@router.get("/{application_id}", response={200: ApplicationOut, **READ_ERRORS})
def get_application(request: HttpRequest, application_id: int) -> Application:
    return _application(request, application_id)


@router.patch("/{application_id}", response={200: ApplicationOut, **WRITE_ERRORS})
def update_application(
    request: HttpRequest, application_id: int, payload: ApplicationPatchIn
) -> Application:
    """Change the fields sent. The owner may change the description and department only."""
    application = _application(request, application_id)
    changes = payload.dict(exclude_unset=True)
    if "owner_id" in changes:
        owner_id = changes.pop("owner_id")
        changes["owner"] = _owner(owner_id) if owner_id else None
    return services.application_update(actor=actor_of(request), application=application, **changes)


@router.get("/{application_id}/keys", response={200: list[ApiKeyOut], **READ_ERRORS})
@paginate(OrderedPagination)
def list_api_keys(request: HttpRequest, application_id: int) -> Any:
    return selectors.api_key_list(application=_application(request, application_id))


@router.post("/{application_id}/keys", response={201: ApiKeyCreatedOut, **WRITE_ERRORS})
def create_api_key(request: HttpRequest, application_id: int, payload: ApiKeyIn) -> Status[Any]:
    """A key for the gateway (`Authorization: Bearer apk_…`); the secret is in this answer only."""
    key, secret = services.api_key_create(
        actor=actor_of(request),
        application=_application(request, application_id),
        name=payload.name,
        expires_in_days=payload.expires_in_days,
    )
    return Status(201, {"key": key, "secret": secret, "expires_at": key.expires_at})


@router.post("/{application_id}/keys/{key_id}/revoke", response={200: ApiKeyOut, **WRITE_ERRORS})
def revoke_api_key(request: HttpRequest, application_id: int, key_id: int) -> ApiKey:
    application = _application(request, application_id)
    key = get_or_404(selectors.api_key_list(application=application), "key", pk=key_id)
    return services.api_key_revoke(actor=actor_of(request), key=key)


@router.get("/{application_id}/grants", response={200: list[GrantOut], **READ_ERRORS})
@paginate(OrderedPagination)
def list_grants(request: HttpRequest, application_id: int) -> Any:
    return selectors.grant_list(application=_application(request, application_id))


@router.post("/{application_id}/grants", response={201: GrantOut, **WRITE_ERRORS})
def create_grant(request: HttpRequest, application_id: int, payload: GrantIn) -> Status[Any]:
    """Let the application use a model (or one adapter of it), or a route; admins and operators
    only. Name either `model_id` (and `adapter_id`) or `route_id`."""
    actor = actor_of(request)
    application = _application(request, application_id)
    services.grant_target_check(
        model=payload.model_id is not None,
        adapter=payload.adapter_id is not None,
        route=payload.route_id is not None,
    )
    model = adapter = route = None
    if payload.route_id is not None:
        route = get_or_404(routing_selectors.route_list(actor=actor), "route", pk=payload.route_id)
    else:
        model = get_or_404(registry_selectors.model_list(actor=actor), "model", pk=payload.model_id)
    if payload.adapter_id:
        adapter = get_or_404(
            registry_selectors.adapter_list(actor=actor), "adapter", pk=payload.adapter_id
        )
    grant = services.grant_create(
        actor=actor, application=application, model=model, adapter=adapter, route=route
    )
    return Status(201, grant)


@router.delete("/{application_id}/grants/{grant_id}", response={204: None, **WRITE_ERRORS})
def delete_grant(request: HttpRequest, application_id: int, grant_id: int) -> Status[None]:
    application = _application(request, application_id)
    grant = get_or_404(selectors.grant_list(application=application), "grant", pk=grant_id)
    services.grant_delete(actor=actor_of(request), grant=grant)
    return Status(204, None)

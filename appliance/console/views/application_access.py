"""An application's API keys and grants: creating a key (its secret shown once), revoking one,
granting a model, adapter or route, and withdrawing a grant. The same services and lookups as
/api/v1/applications/{id}/keys and /grants."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_http_methods

from appliance.access import selectors, services
from appliance.access.models import Grant
from appliance.accounts.permissions import Capability
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    refused,
)
from appliance.console.views.application_forms import (
    Form,
    application_url,
    find_application,
    not_done,
)
from appliance.core.errors import DomainError
from appliance.registry import selectors as registry_selectors
from appliance.registry.choices import EntryStatus
from appliance.routing import selectors as routing_selectors
from appliance.routing.choices import RouteStatus

PAGES = "console/pages/"
DAYS_MAX = 10_000  # beyond any expiry the service accepts; it says which are allowed


@console_view(Capability.APPS_OWN)
@require_http_methods(["GET", "POST"])
def key_new(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """A key for the gateway. Its owner or an admin or operator makes it; the secret is shown on
    the answer to this form and never again."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    context: dict[str, Any] = {"application": application, "values": {}, "errors": FormErrors()}
    template = PAGES + "key_new.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    name = form.text("name")
    expires_in_days = form.number("expires_in_days", high=DAYS_MAX)
    if form.errors:
        return invalid(request, template, context, form.errors)
    try:
        key, secret = services.api_key_create(
            actor=request.actor,
            application=application,
            name=name,
            expires_in_days=expires_in_days,
        )
    except DomainError as error:
        return refused(request, template, context, error)
    return render(
        request,
        PAGES + "key_created.html",
        {"application": application, "key": key, "secret": secret},
        status=201,
    )


@console_view(Capability.APPS_OWN)
@require_http_methods(["GET", "POST"])
def key_revoke(request: ConsoleRequest, application_id: int, key_id: int) -> HttpResponse:
    """Revoking is final and breaks whoever still uses the key, so it is confirmed first."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    key = selectors.api_key_list(application=application).filter(pk=key_id).first()
    if key is None:
        return not_found(request, "key")
    back = application_url(application)
    if key.revoked_at is not None:
        return done(request, f"The key {key.name} ({key.prefix}) was revoked already.", back)
    if request.method == "GET":
        return confirm(
            request,
            title=f"Revoke the key {key.name}",
            consequence=f"The key {key.name} ({key.prefix}…) of {application.name} will be "
            "revoked for good. Applications using it stop working at their next request.",
            action=f"Revoke the key {key.name}",
            cancel_url=back,
        )
    try:
        services.api_key_revoke(actor=request.actor, key=key)
    except DomainError as error:
        return not_done(request, error, back)
    return done(request, f"The key {key.name} ({key.prefix}) was revoked.", back)


@console_view(Capability.APPS_MANAGE)
@require_http_methods(["GET", "POST"])
def grant_new(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """Let the application use an approved model, one approved adapter of it, or a route;
    admins and operators only."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    actor = request.actor
    approved = EntryStatus.APPROVED
    context: dict[str, Any] = {
        "application": application,
        "models": [("", "— none —")]
        + [(m.pk, m.name) for m in registry_selectors.model_list(actor=actor, status=approved)],
        "adapters": [("", "— none (the whole model) —")]
        + [
            (a.pk, f"{a.name} (of {a.base_model.name})")
            for a in registry_selectors.adapter_list(actor=actor, status=approved)
        ],
        "routes": [("", "— none —")]
        + [
            (r.pk, r.name if r.status == RouteStatus.ACTIVE else f"{r.name} ({r.status})")
            for r in routing_selectors.route_list(actor=actor)
        ],
        "values": {},
        "errors": FormErrors(),
    }
    template = PAGES + "application_grant.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    model_id, adapter_id, route_id = (
        form.number(n) for n in ("model_id", "adapter_id", "route_id")
    )
    if form.errors:
        return invalid(request, template, context, form.errors)
    try:
        services.grant_target_check(
            model=model_id is not None, adapter=adapter_id is not None, route=route_id is not None
        )
    except DomainError as error:
        return refused(request, template, context, error)
    model = adapter = route = None
    if route_id is not None:
        route = routing_selectors.route_list(actor=actor).filter(pk=route_id).first()
        if route is None:
            form.errors.add("route_id", "No such route.")
    elif model_id is not None:
        model = registry_selectors.model_list(actor=actor).filter(pk=model_id).first()
        if model is None:
            form.errors.add("model_id", "No such model.")
    if adapter_id is not None:
        adapter = registry_selectors.adapter_list(actor=actor).filter(pk=adapter_id).first()
        if adapter is None:
            form.errors.add("adapter_id", "No such adapter.")
    if form.errors:
        return invalid(request, template, context, form.errors)
    try:
        grant = services.grant_create(
            actor=actor, application=application, model=model, adapter=adapter, route=route
        )
    except DomainError as error:
        return refused(request, template, context, error)
    back = application_url(application)
    return done(request, f"{application.name} may now use {_target(grant)}.", back)


@console_view(Capability.APPS_MANAGE)
@require_http_methods(["GET", "POST"])
def grant_remove(request: ConsoleRequest, application_id: int, grant_id: int) -> HttpResponse:
    """Withdrawing a grant refuses the model at the next request, so it is confirmed first."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    grant = selectors.grant_list(application=application).filter(pk=grant_id).first()
    if grant is None:
        return not_found(request, "grant")
    target = _target(grant)
    back = application_url(application)
    if request.method == "GET":
        return confirm(
            request,
            title=f"Remove the grant of {target}",
            consequence=f"{application.name} will no longer be allowed to use {target}: "
            "the gateway refuses it from the next request.",
            action="Remove the grant",
            cancel_url=back,
        )
    try:
        services.grant_delete(actor=request.actor, grant=grant)
    except DomainError as error:
        return not_done(request, error, back)
    return done(request, f"{application.name} may no longer use {target}.", back)


def _target(grant: Grant) -> str:
    """What a grant lets the application use, in words."""
    if grant.route is not None:
        return f"the route {grant.route.name}"
    assert grant.model is not None  # the database's check constraint guarantees it
    if grant.adapter is not None:
        return f"the adapter {grant.adapter.name} of {grant.model.name}"
    return f"the model {grant.model.name}"


urlpatterns = [
    path("applications/<int:application_id>/keys/new", key_new, name="key-new"),
    path(
        "applications/<int:application_id>/keys/<int:key_id>/revoke",
        key_revoke,
        name="key-revoke",
    ),
    path("applications/<int:application_id>/grants/new", grant_new, name="grant-new"),
    path(
        "applications/<int:application_id>/grants/<int:grant_id>/remove",
        grant_remove,
        name="grant-remove",
    ),
]

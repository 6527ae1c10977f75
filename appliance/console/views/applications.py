"""Applications: the list, creating one, its page, and changing its details, limits, data policy
and status. Keys and grants are in ``application_access``. Every change goes through the same
services as /api/v1/applications, which decide who may do what."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from appliance.access import selectors, services
from appliance.access.choices import ApplicationStatus, DataClassification, DataPolicy
from appliance.access.models import Application
from appliance.accounts.permissions import Capability, allows
from appliance.console.base import (
    ConsoleRequest,
    FormErrors,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    paginate,
    query_without_page,
    refused,
)
from appliance.console.views import application_access
from appliance.console.views.application_forms import (
    CLASSIFICATION_CHOICES,
    DESCRIPTION_MAX,
    LIMIT_FIELDS,
    POLICY_CHOICES,
    STATUS_CHOICES,
    Form,
    application_url,
    find_application,
    find_owner,
    limit_values,
    not_done,
    owner_choices,
    visible_applications,
)
from appliance.core.errors import DomainError

PAGES = "console/pages/"


@console_view()
def applications_page(request: ConsoleRequest) -> HttpResponse:
    """Every application for those who see all; an app owner's own only (the API's selector)."""
    applications = visible_applications(request).annotate(
        active_keys=Count("keys", filter=Q(keys__revoked_at__isnull=True), distinct=True),
        grant_count=Count("grants", distinct=True),
    )
    name = request.GET.get("name", "").strip()
    status = request.GET.get("status", "")
    if name:
        applications = applications.filter(name__icontains=name)
    if status in ApplicationStatus.values:
        applications = applications.filter(status=status)
    context = {
        "page_obj": paginate(request, applications),
        "query": query_without_page(request),
        "filters": {"name": name, "status": status},
        "status_choices": STATUS_CHOICES,
        "can_create": allows(request.actor, Capability.APPS_OWN),
        "sees_all": allows(request.actor, Capability.APPS_VIEW_ALL),
    }
    return render(request, PAGES + "applications.html", context)


@console_view(Capability.APPS_OWN)
@require_http_methods(["GET", "POST"])
def application_new(request: ConsoleRequest) -> HttpResponse:
    """Create an application: app owners their own; admins and operators may name the owner and
    set limits and data policy at once."""
    manager = allows(request.actor, Capability.APPS_MANAGE)
    context: dict[str, Any] = {
        "manager": manager,
        "owners": owner_choices() if manager else [],
        "classifications": CLASSIFICATION_CHOICES,
        "policies": POLICY_CHOICES,
        "limit_fields": LIMIT_FIELDS,
        "values": {
            "data_classification": DataClassification.INTERNAL,
            "data_policy": DataPolicy.NO_CONTENT,
        },
        "errors": FormErrors(),
    }
    template = PAGES + "application_new.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    fields: dict[str, Any] = {
        "name": form.text("name"),
        "description": form.text("description", max_length=DESCRIPTION_MAX),
        "department": form.text("department"),
        "data_classification": form.data.get("data_classification", DataClassification.INTERNAL),
        "data_policy": form.data.get("data_policy", DataPolicy.NO_CONTENT),
        "owner": find_owner(form),
        **form.limits(),
    }
    if form.errors:
        return invalid(request, template, context, form.errors)
    try:
        application = services.application_create(actor=request.actor, **fields)
    except DomainError as error:
        return refused(request, template, context, error)
    return done(request, f"Application {application.name} created.", application_url(application))


@console_view()
def application_page(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """One application: its facts, limits, data policy, grants and API keys, with the actions
    the person's role allows."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    manager = allows(request.actor, Capability.APPS_MANAGE)
    owner = allows(request.actor, Capability.APPS_OWN) and (
        application.owner_id == request.actor.user_id
    )
    context = {
        "application": application,
        "limits": [(label, getattr(application, name)) for name, label, _ in LIMIT_FIELDS],
        "grants": selectors.grant_list(application=application),
        "page_obj": paginate(request, selectors.api_key_list(application=application)),
        "query": query_without_page(request),
        "now": timezone.now(),
        "can_manage": manager,
        "can_keys": manager or owner,
    }
    return render(request, PAGES + "application_detail.html", context)


@console_view(Capability.APPS_OWN)
@require_http_methods(["GET", "POST"])
def application_edit(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """Description and department (the owner may change these), and the owner (admins and
    operators only; the service refuses anyone else)."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    manager = allows(request.actor, Capability.APPS_MANAGE)
    context: dict[str, Any] = {
        "application": application,
        "manager": manager,
        "owners": owner_choices() if manager else [],
        "values": {
            "description": application.description,
            "department": application.department,
            "owner_id": application.owner_id,
        },
        "errors": FormErrors(),
    }
    template = PAGES + "application_edit.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    changes: dict[str, Any] = {
        "description": form.text("description", max_length=DESCRIPTION_MAX),
        "department": form.text("department"),
    }
    new_owner = find_owner(form)
    if new_owner is not None and new_owner.pk != application.owner_id:
        changes["owner"] = new_owner
    return _update(request, application, changes, form, template, context, "Details saved.")


@console_view(Capability.APPS_MANAGE)
@require_http_methods(["GET", "POST"])
def application_limits(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """Limits are set by admins and operators, so nobody raises their own ceiling."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    context: dict[str, Any] = {
        "application": application,
        "limit_fields": LIMIT_FIELDS,
        "values": limit_values(application),
        "errors": FormErrors(),
    }
    template = PAGES + "application_limits.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    return _update(request, application, form.limits(), form, template, context, "Limits saved.")


@console_view(Capability.APPS_MANAGE)
@require_http_methods(["GET", "POST"])
def application_policy(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """The data classification and what the appliance may keep of prompts and completions."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    context: dict[str, Any] = {
        "application": application,
        "classifications": CLASSIFICATION_CHOICES,
        "policies": POLICY_CHOICES,
        "values": {
            "data_classification": application.data_classification,
            "data_policy": application.data_policy,
        },
        "errors": FormErrors(),
    }
    template = PAGES + "application_policy.html"
    if request.method == "GET":
        return render(request, template, context)
    form = Form(request.POST)
    context["values"] = form.values()
    changes = {
        "data_classification": form.data.get("data_classification", ""),
        "data_policy": form.data.get("data_policy", ""),
    }
    return _update(request, application, changes, form, template, context, "Data policy saved.")


def _update(
    request: ConsoleRequest,
    application: Application,
    changes: dict[str, Any],
    form: Form,
    template: str,
    context: dict[str, Any],
    message: str,
) -> HttpResponse:
    """Apply the changes through the service, or show the form again with why not."""
    if form.errors:
        return invalid(request, template, context, form.errors)
    try:
        services.application_update(actor=request.actor, application=application, **changes)
    except DomainError as error:
        return refused(request, template, context, error)
    return done(request, message, application_url(application))


@console_view(Capability.APPS_MANAGE)
@require_http_methods(["GET", "POST"])
def application_disable(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """Disabling refuses every key of the application, so it is confirmed first."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    if request.method == "GET":
        return confirm(
            request,
            title=f"Disable {application.name}",
            consequence=f"Every API key of {application.name} will be refused from its next "
            "request until the application is enabled again. Keys and grants are kept.",
            action=f"Disable {application.name}",
            cancel_url=application_url(application),
        )
    return _set_status(request, application, ApplicationStatus.DISABLED, "disabled")


@console_view(Capability.APPS_MANAGE)
@require_POST
def application_enable(request: ConsoleRequest, application_id: int) -> HttpResponse:
    """Enable a disabled application: its unrevoked keys work again."""
    application = find_application(request, application_id)
    if application is None:
        return not_found(request, "application")
    return _set_status(request, application, ApplicationStatus.ACTIVE, "enabled")


def _set_status(
    request: ConsoleRequest, application: Application, status: str, word: str
) -> HttpResponse:
    back = application_url(application)
    try:
        services.application_update(actor=request.actor, application=application, status=status)
    except DomainError as error:
        return not_done(request, error, back)
    return done(request, f"Application {application.name} {word}.", back)


urlpatterns = [
    path("applications", applications_page, name="applications"),
    path("applications/new", application_new, name="application-new"),
    path("applications/<int:application_id>", application_page, name="application"),
    path("applications/<int:application_id>/edit", application_edit, name="application-edit"),
    path("applications/<int:application_id>/limits", application_limits, name="application-limits"),
    path("applications/<int:application_id>/policy", application_policy, name="application-policy"),
    path(
        "applications/<int:application_id>/disable",
        application_disable,
        name="application-disable",
    ),
    path("applications/<int:application_id>/enable", application_enable, name="application-enable"),
    *application_access.urlpatterns,
]

"""Users and roles: who may use the appliance, with which role, whether they have an
authenticator and where they are signed in; admins create, change, deactivate and reactivate
accounts, reset a lost authenticator and end sessions. Every change goes through the accounts
services (the same ones the API calls), which hold the rules (the last active admin stays)."""

from __future__ import annotations

from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods, require_POST
from pydantic import BaseModel as PydanticModel
from pydantic import ValidationError

from appliance.accounts import mfa, selectors, services, sessions
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.accounts.permissions import Capability, allows
from appliance.accounts.schemas import UserCreateIn, UserUpdateIn
from appliance.accounts.signin import SESSION_RECORD
from appliance.console.base import (
    ConsoleRequest,
    confirm,
    console_view,
    done,
    invalid,
    not_found,
    paginate,
    query_without_page,
    refused,
    schema_errors,
)
from appliance.core.errors import DomainError

LIST = "console/pages/users.html"
CREATE = "console/pages/user_create.html"
CREATED = "console/pages/user_created.html"
DETAIL = "console/pages/user.html"
ACTIVE_CHOICES = [("", "Active or not"), ("yes", "Active"), ("no", "Deactivated")]
CREATE_FIELDS = ("username", "full_name", "email", "role")
UPDATE_FIELDS = ("role", "full_name", "email")
# Plainer words than pydantic's for the rules a person is likely to break.
SCHEMA_MESSAGES = {
    "string_pattern_mismatch": "Letters, digits and @ . + - _ only, no spaces.",
    "string_too_short": "Required.",
    "enum": "Choose a role from the list.",
}


def _parsed(schema: type[PydanticModel], request: ConsoleRequest, fields: tuple[str, ...]) -> Any:
    """The form checked by the API's schema for the same operation (raises ValidationError)."""
    return schema.model_validate({name: request.POST.get(name, "").strip() for name in fields})


def _user(request: ConsoleRequest, user_id: int) -> User | None:
    return selectors.user_visible(actor=request.actor).filter(pk=user_id).first()


@console_view(Capability.USERS_VIEW)
def users_page(request: ConsoleRequest) -> HttpResponse:
    """Everyone's accounts at a glance (admins and auditors): role, state, second factor and
    live sessions, to spot a dormant admin or an account without an authenticator."""
    role = request.GET.get("role", "")
    active = request.GET.get("active", "")
    q = request.GET.get("q", "").strip()[:150]
    users = selectors.user_list(
        actor=request.actor,
        role=role if role in Role.values else None,
        is_active={"yes": True, "no": False}.get(active),
        q=q or None,
    )
    page_obj = paginate(request, users)
    rows = [
        {"user": u, "mfa": mfa.mfa_enrolled(u), "sessions": len(sessions.sessions_of(u))}
        for u in page_obj
    ]
    context = {
        "rows": rows,
        "page_obj": page_obj,
        "query": query_without_page(request),
        "role_choices": [("", "Any role"), *Role.choices],
        "active_choices": ACTIVE_CHOICES,
        "role": role,
        "active": active,
        "q": q,
        "may_manage": allows(request.actor, Capability.USERS_MANAGE),
    }
    return render(request, LIST, context)


def _create_context(values: dict[str, str]) -> dict[str, Any]:
    return {"values": values, "role_choices": Role.choices}


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def user_create(request: ConsoleRequest) -> HttpResponse:
    """A new account with a generated first password, shown once here for the admin to hand
    over (the person changes it after signing in)."""
    if request.method == "GET":
        return render(request, CREATE, _create_context({"role": Role.APP_OWNER}))
    values = {name: request.POST.get(name, "").strip() for name in CREATE_FIELDS}
    context = _create_context(values)
    try:
        payload = _parsed(UserCreateIn, request, CREATE_FIELDS)
    except ValidationError as error:
        return invalid(request, CREATE, context, schema_errors(error, SCHEMA_MESSAGES))
    try:
        user, generated = services.user_create(
            actor=request.actor,
            username=payload.username,
            role=payload.role,
            email=payload.email,
            full_name=payload.full_name,
        )
    except DomainError as error:
        return refused(request, CREATE, context, error)
    return render(request, CREATED, {"created": user, "initial_password": generated})


def _detail_context(request: ConsoleRequest, user: User) -> dict[str, Any]:
    return {
        "person": user,
        "enrolled": mfa.mfa_enrolled(user),
        "mfa_required": mfa.mfa_required(user),
        "sessions": sessions.sessions_of(user),
        "this_session": request.session.get(SESSION_RECORD),
        "role_choices": Role.choices,
        "may_manage": allows(request.actor, Capability.USERS_MANAGE),
    }


def _back(user: User) -> str:
    """The person's page: where each action on them starts, and returns."""
    return reverse("console:user", args=[user.pk])


def _refused_on_detail(request: ConsoleRequest, user: User, error: DomainError) -> HttpResponse:
    user.refresh_from_db()  # show what is stored, not the refused values
    return refused(request, DETAIL, _detail_context(request, user), error)


@console_view(Capability.USERS_VIEW)
def user_detail(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """One account: its role, second factor and live sessions, and (for admins) what can be
    changed about it."""
    user = _user(request, user_id)
    if user is None:
        return not_found(request, "user")
    return render(request, DETAIL, _detail_context(request, user))


@console_view(Capability.USERS_MANAGE)
@require_POST
def user_update(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """Change the role or contact details; the service refuses to demote the last active admin."""
    user = _user(request, user_id)
    if user is None:
        return not_found(request, "user")
    context = _detail_context(request, user)
    try:
        payload = _parsed(UserUpdateIn, request, UPDATE_FIELDS)
    except ValidationError as error:
        return invalid(request, DETAIL, context, schema_errors(error, SCHEMA_MESSAGES))
    try:
        services.user_update(
            actor=request.actor,
            user=user,
            role=payload.role,
            email=payload.email,
            full_name=payload.full_name,
        )
    except DomainError as error:
        return _refused_on_detail(request, user, error)
    return done(request, f"{user.username} saved.", _back(user))


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def user_deactivate(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """Lock an account out: its sessions end and its API tokens are revoked at once."""
    return _set_active(request, user_id, active=False)


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def user_activate(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """Let a deactivated person sign in again, with the role they had."""
    return _set_active(request, user_id, active=True)


def _set_active(request: ConsoleRequest, user_id: int, *, active: bool) -> HttpResponse:
    user = _user(request, user_id)
    if user is None:
        return not_found(request, "user")
    verb = "Reactivate" if active else "Deactivate"
    if request.method == "GET":
        consequence = (
            f"{user.username} will be able to sign in again as {user.get_role_display()} with "
            "their current password. Their old API tokens stay revoked."
            if active
            else f"{user.username} will no longer be able to sign in; their signed-in sessions "
            "end now and all their personal API tokens are revoked. The account can be "
            "reactivated later, but revoked tokens stay revoked."
        )
        return confirm(
            request,
            title=f"{verb} {user.username}",
            consequence=consequence,
            action=f"{verb} {user.username}",
            cancel_url=_back(user),
        )
    try:
        services.user_set_active(actor=request.actor, user=user, active=active)
    except DomainError as error:
        return _refused_on_detail(request, user, error)
    return done(request, f"{user.username} was {verb.lower()}d.", _back(user))


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def user_mfa_reset(request: ConsoleRequest, user_id: int) -> HttpResponse:
    """Remove a lost authenticator so the person can set up a new one at their next sign-in."""
    user = _user(request, user_id)
    if user is None:
        return not_found(request, "user")
    if request.method == "GET":
        return confirm(
            request,
            title=f"Reset the authenticator of {user.username}",
            consequence=f"The authenticator and all recovery codes of {user.username} will be "
            "removed. Codes from their app stop working; "
            + (
                "their role needs an authenticator, so they must set up a new one at their "
                "next sign-in."
                if mfa.mfa_required(user)
                else "they sign in with their password alone until they set up a new one."
            ),
            action="Reset the authenticator",
            cancel_url=_back(user),
        )
    try:
        mfa.mfa_reset(actor=request.actor, user=user)
    except DomainError as error:
        return _refused_on_detail(request, user, error)
    return done(request, f"The authenticator of {user.username} was reset.", _back(user))


@console_view(Capability.USERS_MANAGE)
@require_http_methods(["GET", "POST"])
def user_session_end(request: ConsoleRequest, user_id: int, session_id: int) -> HttpResponse:
    """Sign a person out of one session (a lost laptop, a shared machine)."""
    user = _user(request, user_id)
    if user is None:
        return not_found(request, "user")
    live = {s.pk: s for s in sessions.sessions_of(user)}
    record = live.get(session_id)
    if record is None:
        return not_found(request, "session")
    if request.method == "GET":
        return confirm(
            request,
            title=f"End a session of {user.username}",
            consequence=f"The session of {user.username} started from "
            f"{record.source_ip or 'an unknown address'} "
            f"({record.user_agent or 'unknown browser'}) will be signed out at once.",
            action="End the session",
            cancel_url=_back(user),
        )
    try:
        sessions.session_end(actor=request.actor, record_id=record.pk)
    except DomainError as error:
        return _refused_on_detail(request, user, error)
    return done(request, f"The session of {user.username} was ended.", _back(user))


urlpatterns = [
    path("users", users_page, name="users"),
    path("users/new", user_create, name="user-create"),
    path("users/<int:user_id>", user_detail, name="user"),
    path("users/<int:user_id>/update", user_update, name="user-update"),
    path("users/<int:user_id>/deactivate", user_deactivate, name="user-deactivate"),
    path("users/<int:user_id>/activate", user_activate, name="user-activate"),
    path("users/<int:user_id>/authenticator/reset", user_mfa_reset, name="user-mfa-reset"),
    path(
        "users/<int:user_id>/sessions/<int:session_id>/end",
        user_session_end,
        name="user-session-end",
    ),
]

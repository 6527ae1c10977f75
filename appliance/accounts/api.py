"""Accounts API: sign-in, users and roles, personal API tokens."""

from typing import Any

from django.contrib.auth import logout, update_session_auth_hash
from django.http import HttpRequest
from django.middleware.csrf import get_token
from ninja import Query, Router, Status
from ninja.pagination import paginate

from appliance.accounts import break_glass, selectors, services
from appliance.accounts.models import User
from appliance.accounts.schemas import (
    BreakGlassIn,
    BreakGlassOut,
    CsrfOut,
    LoginIn,
    PasswordChangeIn,
    TokenCreatedOut,
    TokenCreateIn,
    TokenOut,
    UserCreatedOut,
    UserCreateIn,
    UserFilter,
    UserOut,
    UserUpdateIn,
)
from appliance.accounts.signin import SESSION_RECORD, second_factor, sign_in
from appliance.api.base import OrderedPagination, actor_of, error_responses, get_or_404
from appliance.core.context import current_source_ip
from appliance.core.errors import UnsupportedMediaType

auth_router = Router(tags=["auth"])
users_router = Router(tags=["users"])
tokens_router = Router(tags=["tokens"])
break_glass_router = Router(tags=["break-glass"])


@auth_router.get("/csrf", auth=None, response=CsrfOut)
def csrf(request: HttpRequest) -> dict[str, str]:
    """A CSRF token (also set as a cookie) for session-authenticated unsafe requests."""
    return {"csrf_token": get_token(request)}


@auth_router.post(
    "/login",
    auth=None,
    response={200: UserOut, **error_responses(401, 403, 415, 422, 429, 503)},
)
def session_login(request: HttpRequest, payload: LoginIn) -> User:
    """Sign in with a password and, for a person with an authenticator, its current code (or a
    recovery code); starts a new session (new id, so no fixation). Admins must have set up an
    authenticator (in the console) first. JSON only, so a cross-site HTML form cannot sign a
    victim into another account."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the credentials as application/json.")
    user = services.password_check(
        username=payload.username, password=payload.password, source_ip=current_source_ip()
    )
    sign_in(request, user, second_factor(user, payload.code))
    return user


@auth_router.post("/logout", response={204: None, **error_responses(401)})
def session_logout(request: HttpRequest) -> Status[Any]:
    """End the session server-side; the old cookie stops working."""
    services.session_logout(actor=actor_of(request), record_id=request.session.get(SESSION_RECORD))
    logout(request)
    return Status(204, None)


@auth_router.get("/me", response={200: UserOut, **error_responses(401)})
def me(request: HttpRequest) -> Any:
    return actor_of(request).user


@auth_router.post("/password", response={204: None, **error_responses(401, 422)})
def change_password(request: HttpRequest, payload: PasswordChangeIn) -> Status[Any]:
    actor = actor_of(request)
    services.user_change_password(
        actor=actor,
        user=actor.user,
        current_password=payload.current_password,
        new_password=payload.new_password,
    )
    if request.user.is_authenticated:
        update_session_auth_hash(request, actor.user)  # keep this session, end the others
    return Status(204, None)


@users_router.get("", response={200: list[UserOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_users(request: HttpRequest, filters: Query[UserFilter]) -> Any:
    return selectors.user_list(
        actor=actor_of(request), role=filters.role, is_active=filters.is_active, q=filters.q
    )


@users_router.post("", response={201: UserCreatedOut, **error_responses(401, 403, 409, 422)})
def create_user(request: HttpRequest, payload: UserCreateIn) -> Status[Any]:
    user, generated = services.user_create(actor=actor_of(request), **payload.dict())
    return Status(201, {"user": user, "initial_password": generated})


@users_router.get("/{user_id}", response={200: UserOut, **error_responses(401, 404)})
def get_user(request: HttpRequest, user_id: int) -> User:
    return _visible_user(request, user_id)


def _visible_user(request: HttpRequest, user_id: int) -> User:
    return get_or_404(selectors.user_visible(actor=actor_of(request)), "user", pk=user_id)


@users_router.patch(
    "/{user_id}", response={200: UserOut, **error_responses(401, 403, 404, 409, 422)}
)
def update_user(request: HttpRequest, user_id: int, payload: UserUpdateIn) -> User:
    user = _visible_user(request, user_id)
    return services.user_update(actor=actor_of(request), user=user, **payload.dict())


@users_router.post(
    "/{user_id}/deactivate", response={200: UserOut, **error_responses(401, 403, 404, 409)}
)
def deactivate_user(request: HttpRequest, user_id: int) -> User:
    user = _visible_user(request, user_id)
    return services.user_set_active(actor=actor_of(request), user=user, active=False)


@users_router.post(
    "/{user_id}/activate", response={200: UserOut, **error_responses(401, 403, 404, 409)}
)
def activate_user(request: HttpRequest, user_id: int) -> User:
    user = _visible_user(request, user_id)
    return services.user_set_active(actor=actor_of(request), user=user, active=True)


@tokens_router.get("", response={200: list[TokenOut], **error_responses(401)})
@paginate(OrderedPagination)
def list_tokens(request: HttpRequest) -> Any:
    """Your own tokens (administrators see everyone's)."""
    return selectors.token_visible(actor=actor_of(request))


@tokens_router.post("", response={201: TokenCreatedOut, **error_responses(401, 422)})
def create_token(request: HttpRequest, payload: TokenCreateIn) -> Status[Any]:
    """A personal API token acting with your role. The secret is shown only in this response."""
    token, secret = services.token_create(
        actor=actor_of(request), name=payload.name, expires_in_days=payload.expires_in_days
    )
    return Status(201, {"token": token, "secret": secret, "expires_at": token.expires_at})


@tokens_router.post(
    "/{token_id}/revoke", response={200: TokenOut, **error_responses(401, 403, 404)}
)
def revoke_token(request: HttpRequest, token_id: int) -> Any:
    actor = actor_of(request)
    token = get_or_404(selectors.token_visible(actor=actor), "token", pk=token_id)
    return services.token_revoke(actor=actor, token=token)


@break_glass_router.get("", response={200: list[BreakGlassOut], **error_responses(401, 403)})
@paginate(OrderedPagination)
def list_break_glass(request: HttpRequest) -> Any:
    """Every emergency access, newest first, for review (admins and auditors)."""
    return break_glass.break_glass_list(actor=actor_of(request))


@break_glass_router.post(
    "", response={201: BreakGlassOut, **error_responses(401, 403, 404, 409, 422, 429)}
)
def open_break_glass(request: HttpRequest, payload: BreakGlassIn) -> Status[Any]:
    """Let a person act as an admin for 5 to 480 minutes, with a reason and the granting
    admin's own authenticator code; ends by itself; high-severity audit events."""
    user = _visible_user(request, payload.user_id)
    grant = break_glass.break_glass_grant(
        actor=actor_of(request),
        user=user,
        reason=payload.reason,
        minutes=payload.minutes,
        code=payload.code,
    )
    return Status(201, grant)


@break_glass_router.post(
    "/{grant_id}/end", response={200: BreakGlassOut, **error_responses(401, 403, 404, 409)}
)
def end_break_glass(request: HttpRequest, grant_id: int) -> Any:
    """End emergency access before its time."""
    return break_glass.break_glass_end(actor=actor_of(request), grant_id=grant_id)

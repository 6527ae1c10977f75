"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, ModelSchema, Schema

from appliance.accounts.break_glass import is_open
from appliance.accounts.choices import Role
from appliance.accounts.models import ApiToken, BreakGlass, User
from appliance.api.base import InSchema


class LoginIn(InSchema):
    username: str = Field(max_length=150)
    password: str = Field(max_length=1024)
    code: str | None = Field(
        default=None,
        max_length=32,
        description="The authenticator app's current code, or a recovery code; needed by "
        "people who have set up an authenticator.",
    )


class PasswordChangeIn(InSchema):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class CsrfOut(Schema):
    csrf_token: str


class UserOut(ModelSchema):
    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "full_name",
            "role",
            "is_active",
            "date_joined",
            "last_login",
        ]


class UserCreateIn(InSchema):
    username: str = Field(min_length=1, max_length=150, pattern=r"^[\w.@+-]+$")
    role: Role
    email: str = Field("", max_length=254)
    full_name: str = Field("", max_length=150)
    password: str | None = Field(None, max_length=1024)


class UserCreatedOut(Schema):
    user: UserOut
    initial_password: str | None = Field(
        None, description="Generated password, shown only in this response."
    )


class UserUpdateIn(InSchema):
    role: Role | None = None
    email: str | None = Field(None, max_length=254)
    full_name: str | None = Field(None, max_length=150)


class UserFilter(Schema):
    role: Role | None = None
    is_active: bool | None = None
    q: str | None = Field(None, max_length=150, description="Part of the user name or email.")


class TokenOut(ModelSchema):
    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]


class TokenCreateIn(InSchema):
    name: str = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(None, ge=1, le=366)


class TokenCreatedOut(Schema):
    token: TokenOut
    secret: str = Field(description="The token; shown only in this response, store it now.")
    expires_at: datetime | None = None


class BreakGlassIn(InSchema):
    user_id: int
    reason: str = Field(min_length=1, max_length=1000)
    minutes: int = Field(default=60, description="5 to 480")
    code: str = Field(
        max_length=32, description="The granting admin's own current authenticator code."
    )


class BreakGlassOut(Schema):
    id: int
    user_id: int
    username: str = Field(alias="user.username")
    granted_by: str = Field(alias="granted_by.username")
    reason: str
    role: str
    started_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    open: bool

    @staticmethod
    def resolve_ended_by(grant: BreakGlass) -> str | None:
        return grant.ended_by.username if grant.ended_by is not None else None

    @staticmethod
    def resolve_open(grant: BreakGlass) -> bool:
        return is_open(grant)

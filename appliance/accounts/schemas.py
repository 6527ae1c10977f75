"""Request and response bodies of the accounts API."""

from __future__ import annotations

from datetime import datetime

from ninja import Field, ModelSchema, Schema

from appliance.accounts.choices import Role
from appliance.accounts.models import ApiToken, User
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

"""Single sign-on through the organisation's identity provider (OpenID Connect, code flow with
PKCE). The provider is a fake on an httpx transport (an outside system); everything of ours is
real: the console's redirect and callback, the ID token checks, the account and role from the
groups, the second-factor rule, the session and the audit events."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client

from appliance.accounts import oidc
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db
ISSUER = "https://idp.hospital.example/realms/staff"
CLIENT_ID = "model-appliance"


class FakeIdP:
    """Discovery, JWKS and a token endpoint that checks the PKCE verifier; the test decides the
    claims of the next ID token (and may spoil it)."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.claims: dict[str, Any] = {}
        self.challenges: dict[str, tuple[str, str]] = {}  # code → (challenge, nonce)
        self.signing_key: Any = self.key
        self.token_requests = 0

    def jwks(self) -> dict[str, Any]:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}

    def authorize(self, url: str) -> str:
        """The person signs in at the provider; returns the code the browser brings back."""
        query = {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}
        assert query["code_challenge_method"] == "S256" and query["client_id"] == CLIENT_ID
        code = f"code-{len(self.challenges)}"
        self.challenges[code] = (query["code_challenge"], query["nonce"])
        return code

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "authorization_endpoint": f"{ISSUER}/protocol/openid-connect/auth",
                    "token_endpoint": f"{ISSUER}/protocol/openid-connect/token",
                    "jwks_uri": f"{ISSUER}/protocol/openid-connect/certs",
                },
            )
        if path.endswith("/certs"):
            return httpx.Response(200, json=self.jwks())
        if path.endswith("/token"):
            self.token_requests += 1
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            challenge, nonce = self.challenges.pop(form["code"], ("", ""))
            verifier = form.get("code_verifier", "")
            expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not challenge or expected.decode().rstrip("=") != challenge:
                return httpx.Response(400, json={"error": "invalid_grant"})
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 300,
                "nonce": nonce,
                **self.claims,
            }
            token = jwt.encode(claims, self.signing_key, algorithm="RS256", headers={"kid": "k1"})
            return httpx.Response(200, json={"id_token": token, "token_type": "Bearer"})
        return httpx.Response(404)


@pytest.fixture
def idp(settings: Any, monkeypatch: pytest.MonkeyPatch) -> FakeIdP:
    settings.APPLIANCE_OIDC_ISSUER = ISSUER
    settings.APPLIANCE_OIDC_CLIENT_ID = CLIENT_ID
    settings.APPLIANCE_OIDC_CLIENT_SECRET = "client-secret-for-tests"
    settings.APPLIANCE_OIDC_ROLE_GROUPS = [
        "admin=IT-Admins",
        "operator=IT-Ops",
        "auditor=Compliance",
        "app_owner=App-Teams",
    ]
    fake = FakeIdP()
    fake.claims = {
        "sub": "f3a9-0001",
        "preferred_username": "dr.house",
        "email": "house@hospital.example",
        "name": "Gregory House",
        "groups": ["IT-Ops", "Everyone"],
        "amr": ["pwd", "otp"],
    }
    monkeypatch.setattr(
        oidc, "http", lambda: httpx.Client(transport=httpx.MockTransport(fake.handle))
    )
    return fake


def through_idp(client: Client, idp: FakeIdP, *, state: str | None = None) -> Any:
    start = client.get("/console/sign-in/sso")
    assert start.status_code == 302 and start["Location"].startswith(ISSUER)
    query = {k: v[0] for k, v in parse_qs(urlparse(start["Location"]).query).items()}
    code = idp.authorize(start["Location"])
    return client.get(
        "/console/sign-in/sso/callback", {"code": code, "state": state or query["state"]}
    )


def signed_in_as(client: Client) -> str | None:
    response = client.get("/api/v1/auth/me")
    return response.json()["username"] if response.status_code == 200 else None


def test_a_first_sign_in_makes_the_account_with_the_role_of_its_groups(idp: FakeIdP) -> None:
    client = Client()
    assert b"Sign in with your organisation" in client.get("/console/sign-in").content
    done = through_idp(client, idp)
    assert done.status_code == 302 and done["Location"] == "/console/"
    user = User.objects.get(username="dr.house")
    assert (user.role, user.email, user.sso_subject) == (
        Role.OPERATOR,
        "house@hospital.example",
        f"{ISSUER}|f3a9-0001",
    )
    assert not user.has_usable_password()
    assert signed_in_as(client) == "dr.house"
    created = AuditEvent.objects.get(action="user.create")
    assert created.details == {"username": "dr.house", "role": "operator", "source": "oidc"}
    login = AuditEvent.objects.get(action="auth.login", outcome="success")
    assert login.details["mfa"] == "idp" and login.actor_label == "dr.house"


def test_the_role_follows_the_groups_at_every_sign_in(idp: FakeIdP) -> None:
    through_idp(Client(), idp)
    idp.claims["groups"] = ["Compliance"]
    through_idp(Client(), idp)
    assert User.objects.get(username="dr.house").role == Role.AUDITOR
    change = AuditEvent.objects.get(action="user.update")
    assert change.details["role"] == {"from": "operator", "to": "auditor"}


def test_a_person_in_no_mapped_group_is_refused_and_nothing_is_made(idp: FakeIdP) -> None:
    idp.claims["groups"] = ["Everyone"]
    client = Client()
    refused = through_idp(client, idp)
    assert refused.status_code == 403 and b"in no group that has a role here" in refused.content
    assert not User.objects.filter(username="dr.house").exists()
    assert signed_in_as(client) is None
    assert AuditEvent.objects.get(action="auth.sso").outcome == "denied"


def test_an_admin_without_a_second_factor_at_the_provider_sets_one_up_here(
    idp: FakeIdP,
) -> None:
    idp.claims.update(groups=["IT-Admins"], amr=["pwd"])
    client = Client()
    answer = through_idp(client, idp)
    assert answer["Location"] == "/console/sign-in/authenticator"
    assert signed_in_as(client) is None


@pytest.mark.parametrize(
    "spoil",
    [
        "state",  # a callback this browser did not start
        "audience",  # a token for another application
        "expired",
        "key",  # signed by a key the provider does not publish
        "issuer",
    ],
)
def test_an_untrustworthy_answer_signs_nobody_in(idp: FakeIdP, spoil: str) -> None:
    if spoil == "audience":
        idp.claims["aud"] = "another-app"
    elif spoil == "expired":
        idp.claims.update(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    elif spoil == "key":
        idp.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif spoil == "issuer":
        idp.claims["iss"] = "https://evil.example"
    client = Client()
    answer = through_idp(client, idp, state="forged" if spoil == "state" else None)
    assert answer.status_code == 401 and b"sign" in answer.content.lower()
    assert signed_in_as(client) is None
    assert not User.objects.filter(username="dr.house").exists()
    if spoil == "state":
        assert idp.token_requests == 0  # the code is never even redeemed


def test_a_local_account_of_the_same_name_is_not_taken_over(idp: FakeIdP) -> None:
    make_user("dr.house", Role.APP_OWNER)
    refused = through_idp(Client(), idp)
    assert refused.status_code == 409
    local = User.objects.get(username="dr.house")
    assert local.sso_subject is None and local.role == Role.APP_OWNER


def test_a_person_from_the_provider_has_no_password_here(idp: FakeIdP) -> None:
    through_idp(Client(), idp)
    answer = Client().post("/console/sign-in", {"username": "dr.house", "password": PASSWORD})
    assert answer.status_code == 401


def test_without_an_issuer_there_is_no_single_sign_on(db: None) -> None:
    client = Client()
    assert b"Sign in with your organisation" not in client.get("/console/sign-in").content
    assert client.get("/console/sign-in/sso").status_code == 404

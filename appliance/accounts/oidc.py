"""OpenID Connect, the authorization code flow with PKCE, against the organisation's own identity
provider (inside its network; the appliance calls nothing else). This module speaks the protocol
and checks the ID token; ``sso.py`` decides who the person is in the appliance."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from django.conf import settings
from django.core.cache import cache

from appliance.core.errors import NotAuthenticated

DISCOVERY_TTL = 3600
ALGORITHMS = ["RS256", "PS256", "ES256", "EdDSA"]
LEEWAY_SECONDS = 60  # clock difference tolerated between the appliance and the IdP


class SsoFailed(NotAuthenticated):
    """The identity provider's answer could not be trusted or used; the message is safe to show
    (it never quotes a token)."""

    code = "sso_failed"


@dataclass(frozen=True)
class Provider:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str


def enabled() -> bool:
    return bool(settings.APPLIANCE_OIDC_ISSUER and settings.APPLIANCE_OIDC_CLIENT_ID)


def http() -> httpx.Client:
    """The client for the IdP (tests put a fake IdP behind it)."""
    return httpx.Client(timeout=10, trust_env=False, follow_redirects=False)


def _get_json(url: str) -> dict[str, Any]:
    try:
        with http() as client:
            answer = client.get(url)
            answer.raise_for_status()
            document = answer.json()
    except (httpx.HTTPError, ValueError):
        raise SsoFailed("The identity provider could not be reached.") from None
    if not isinstance(document, dict):
        raise SsoFailed("The identity provider answered something unexpected.")
    return document


def provider() -> Provider:
    """The IdP's endpoints from its discovery document (cached for an hour); its issuer must be
    exactly the configured one."""
    issuer = settings.APPLIANCE_OIDC_ISSUER
    key = f"oidc:discovery:{hashlib.sha256(issuer.encode()).hexdigest()[:16]}"
    document = cache.get(key)
    if document is None:
        document = _get_json(f"{issuer}/.well-known/openid-configuration")
        if document.get("issuer") != issuer:
            raise SsoFailed("The identity provider names another issuer than configured.")
        cache.set(key, document, DISCOVERY_TTL)
    try:
        return Provider(
            issuer=issuer,
            authorization_endpoint=document["authorization_endpoint"],
            token_endpoint=document["token_endpoint"],
            jwks_uri=document["jwks_uri"],
        )
    except KeyError:
        raise SsoFailed("The identity provider's discovery document is incomplete.") from None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def begin(redirect_uri: str) -> tuple[str, dict[str, str]]:
    """Where to send the browser, and what to keep in the session until it comes back (state
    against forged callbacks, nonce against replayed tokens, the PKCE verifier)."""
    pending = {
        "state": secrets.token_urlsafe(24),
        "nonce": secrets.token_urlsafe(24),
        "verifier": secrets.token_urlsafe(48),
    }
    query = urlencode(
        {
            "response_type": "code",
            "client_id": settings.APPLIANCE_OIDC_CLIENT_ID,
            "redirect_uri": redirect_uri,
            "scope": settings.APPLIANCE_OIDC_SCOPES,
            "state": pending["state"],
            "nonce": pending["nonce"],
            "code_challenge": _b64(hashlib.sha256(pending["verifier"].encode()).digest()),
            "code_challenge_method": "S256",
        }
    )
    return f"{provider().authorization_endpoint}?{query}", pending


def finish(
    params: dict[str, str], pending: dict[str, str] | None, redirect_uri: str
) -> dict[str, Any]:
    """The verified claims of the person the IdP signed in, from the callback's parameters."""
    if not pending or not hmac.compare_digest(params.get("state", ""), pending["state"]):
        raise SsoFailed("This sign-in was not started here, or it took too long; start again.")
    if params.get("error"):
        raise SsoFailed("The identity provider did not sign you in.")
    code = params.get("code", "")
    if not code:
        raise SsoFailed("The identity provider sent no authorization code.")
    idp = provider()
    token = _exchange(idp, code, pending["verifier"], redirect_uri)
    claims = _verify(idp, token)
    if not hmac.compare_digest(str(claims.get("nonce", "")), pending["nonce"]):
        raise SsoFailed("The identity token was not issued for this sign-in.")
    return claims


def _exchange(idp: Provider, code: str, verifier: str, redirect_uri: str) -> str:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": settings.APPLIANCE_OIDC_CLIENT_ID,
        "client_secret": settings.APPLIANCE_OIDC_CLIENT_SECRET,
        "code_verifier": verifier,
    }
    try:
        with http() as client:
            answer = client.post(idp.token_endpoint, data=form)
            answer.raise_for_status()
            id_token = answer.json().get("id_token")
    except (httpx.HTTPError, ValueError, AttributeError):
        raise SsoFailed("The identity provider refused the authorization code.") from None
    if not isinstance(id_token, str):
        raise SsoFailed("The identity provider sent no identity token.")
    return id_token


def _verify(idp: Provider, id_token: str) -> dict[str, Any]:
    """Signature (a key from the IdP's JWKS), issuer, audience, expiry and issue time."""
    try:
        kid = jwt.get_unverified_header(id_token).get("kid")
    except jwt.PyJWTError:
        raise SsoFailed("The identity token is malformed.") from None
    keys = _get_json(idp.jwks_uri).get("keys", [])
    matching = [k for k in keys if isinstance(k, dict) and (kid is None or k.get("kid") == kid)]
    if not matching:
        raise SsoFailed("The identity token is signed with a key the provider does not publish.")
    try:
        key = jwt.PyJWK(matching[0])
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key=key.key,
            algorithms=ALGORITHMS,
            audience=settings.APPLIANCE_OIDC_CLIENT_ID,
            issuer=idp.issuer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "aud", "iss"]},
        )
    except jwt.PyJWTError:
        raise SsoFailed("The identity token did not verify.") from None
    return claims

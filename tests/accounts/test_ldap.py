"""Sign-in with the organisation's directory (LDAP / Active Directory) through the ordinary
sign-in: the directory checks the password, its groups give the role, and the throttling, the
audit events and the second-factor rule are those of any sign-in. The directory is ldap3's
in-memory mock (an outside system); everything of ours is real."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from ldap3 import MOCK_SYNC, OFFLINE_AD_2012_R2, Connection, Server

from appliance.accounts import ldap
from appliance.accounts.choices import Role
from appliance.accounts.models import User
from appliance.audit.models import AuditEvent
from tests.conftest import PASSWORD, fresh_code, make_user, with_authenticator

pytestmark = pytest.mark.django_db
BASE = "OU=Staff,DC=hospital,DC=example"
SERVICE = f"CN=appliance-svc,{BASE}"
ADMINS = "CN=IT-Admins,OU=Groups,DC=hospital,DC=example"
OPS = "CN=IT-Ops,OU=Groups,DC=hospital,DC=example"
NURSE_PASSWORD = "Ward 7 night shift password"


@pytest.fixture
def directory(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Server:
    settings.APPLIANCE_LDAP_URL = "ldaps://dc1.hospital.example"
    settings.APPLIANCE_LDAP_BIND_DN = SERVICE
    settings.APPLIANCE_LDAP_BIND_PASSWORD = "service account password"
    settings.APPLIANCE_LDAP_USER_BASE = BASE
    settings.APPLIANCE_LDAP_ROLE_GROUPS = f"admin={ADMINS};operator={OPS}"
    server = Server("dc1.hospital.example", get_info=OFFLINE_AD_2012_R2)
    seed = Connection(server, user=SERVICE, password="x", client_strategy=MOCK_SYNC)
    seed.strategy.add_entry(SERVICE, {"userPassword": "service account password"})
    seed.strategy.add_entry(
        f"CN=Nora Nurse,{BASE}",
        {
            "objectClass": ["person", "user"],
            "sAMAccountName": "nora",
            "userPassword": NURSE_PASSWORD,
            "mail": "nora@hospital.example",
            "displayName": "Nora Nurse",
            "memberOf": [OPS, "CN=Everyone,OU=Groups,DC=hospital,DC=example"],
        },
    )
    seed.strategy.add_entry(
        f"CN=Guest Person,{BASE}",
        {"objectClass": ["person"], "sAMAccountName": "guest", "userPassword": "guest password"},
    )

    def connect(user: str, password: str) -> Connection:
        return Connection(server, user=user, password=password, client_strategy=MOCK_SYNC)

    monkeypatch.setattr(ldap, "_connect", connect)
    return server


def api_login(username: str, password: str) -> Any:
    return Client().post(
        "/api/v1/auth/login",
        data=json.dumps({"username": username, "password": password}),
        content_type="application/json",
    )


def test_a_directory_person_signs_in_and_gets_the_role_of_their_groups(directory: Server) -> None:
    answer = api_login("nora", NURSE_PASSWORD)
    assert answer.status_code == 200, answer.content
    nora = User.objects.get(username="nora")
    assert (nora.role, nora.email, nora.full_name) == (
        Role.OPERATOR,
        "nora@hospital.example",
        "Nora Nurse",
    )
    assert nora.sso_subject == f"ldap:ldaps://dc1.hospital.example|cn=nora nurse,{BASE.lower()}"
    assert not nora.has_usable_password()
    created = AuditEvent.objects.get(action="user.create")
    assert created.details == {"username": "nora", "role": "operator", "source": "ldap"}
    assert AuditEvent.objects.get(action="auth.login", outcome="success").actor_label == "nora"


def test_a_wrong_password_is_refused_like_any_other(directory: Server) -> None:
    answer = api_login("nora", "not her password")
    assert (answer.status_code, answer.json()["code"]) == (401, "invalid_credentials")
    assert not User.objects.filter(username="nora").exists()
    assert AuditEvent.objects.get(action="auth.login", outcome="failure")


def test_an_empty_password_never_reaches_the_directory(directory: Server) -> None:
    assert ldap.find("nora", "") is None  # an empty bind would be anonymous, and succeed


def test_a_person_in_no_mapped_group_is_refused(directory: Server) -> None:
    answer = api_login("guest", "guest password")
    assert (answer.status_code, answer.json()["code"]) == (403, "sso_no_role")
    assert not User.objects.filter(username="guest").exists()


def test_a_directory_admin_must_still_give_an_authenticator_code(
    directory: Server, settings: Any
) -> None:
    settings.APPLIANCE_LDAP_ROLE_GROUPS = f"admin={OPS}"
    answer = api_login("nora", NURSE_PASSWORD)
    assert (answer.status_code, answer.json()["code"]) == (403, "mfa_enrolment_required")


def test_a_local_account_keeps_its_own_password_and_is_not_taken_over(
    directory: Server,
) -> None:
    make_user("nora", Role.APP_OWNER)
    assert api_login("nora", PASSWORD).status_code == 200  # the local password, as before
    refused = api_login("nora", NURSE_PASSWORD)
    assert refused.status_code == 409
    assert User.objects.get(username="nora").sso_subject is None


def test_filter_characters_in_a_user_name_cannot_widen_the_search(directory: Server) -> None:
    assert ldap.find("nor*", NURSE_PASSWORD) is None  # unescaped, it would find nora
    assert ldap.find("nora)(sAMAccountName=*", NURSE_PASSWORD) is None


def test_without_a_url_the_directory_is_not_asked(settings: Any) -> None:
    settings.APPLIANCE_LDAP_URL = ""
    assert api_login("nora", NURSE_PASSWORD).status_code == 401


def test_a_directory_person_with_an_authenticator_signs_in_to_the_console(
    directory: Server,
) -> None:
    assert api_login("nora", NURSE_PASSWORD).status_code == 200  # first sign-in makes the account
    nora = User.objects.get(username="nora")
    with_authenticator(nora)
    browser = Client()
    first = browser.post("/console/sign-in", {"username": "nora", "password": NURSE_PASSWORD})
    assert first["Location"] == "/console/sign-in/code"
    second = browser.post("/console/sign-in/code", {"code": fresh_code(nora)})
    assert second.status_code == 302 and second["Location"] == "/console/"
    assert browser.get("/api/v1/auth/me").json()["username"] == "nora"

"""Signing in to the console: password, then the authenticator (set up at an admin's first
sign-in), recovery codes, throttling, session limits, one's own sessions, signing out."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client

from appliance.accounts import totp
from appliance.accounts.models import TotpDevice, User, UserSession
from appliance.audit.models import AuditEvent
from tests.conftest import PASSWORD, fresh_code, with_authenticator

pytestmark = pytest.mark.django_db


def password_step(client: Client, username: str, password: str = PASSWORD, **extra: Any) -> Any:
    return client.post("/console/sign-in", {"username": username, "password": password, **extra})


def signed_in_as(client: Client) -> str | None:
    response = client.get("/console/account")
    if response.status_code != 200:
        return None
    return re.search(rb'<a href="/console/account">([^<]+)</a>', response.content)[1].decode()


def test_the_sign_in_page_has_a_strict_policy_and_no_inline_script(db: None) -> None:
    response = Client().get("/console/sign-in")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    assert response["Cache-Control"] == "no-store"
    html = response.content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # every script is a file
    assert " style=" not in html and "onclick" not in html


def test_an_admin_sets_up_an_authenticator_at_the_first_sign_in(admin: User) -> None:
    client = Client()
    response = password_step(client, "alice")
    assert response.status_code == 302 and response["Location"] == "/console/sign-in/authenticator"
    assert signed_in_as(client) is None  # a password alone signs nobody in

    page = client.get("/console/sign-in/authenticator").content.decode()
    secret = re.search(r'id="totp-secret" class="mono">([A-Z2-7 ]+)<', page)[1].replace(" ", "")
    assert 'src="data:image/svg+xml' in page  # the QR code is drawn here, not fetched
    wrong = client.post("/console/sign-in/authenticator", {"code": "000000"})
    assert wrong.status_code == 422 and b"That code is not right" in wrong.content

    done = client.post(
        "/console/sign-in/authenticator", {"code": totp.code_at(secret, totp.current_step())}
    )
    assert done.status_code == 200
    codes = re.findall(r"<li>([0-9a-f]{5}-[0-9a-f]{5})</li>", done.content.decode())
    assert len(codes) == 10
    assert signed_in_as(client) == "alice"
    login = AuditEvent.objects.get(action="auth.login", outcome="success")
    assert login.details["mfa"] == "totp" and login.actor_label == "alice"
    assert AuditEvent.objects.filter(action="auth.mfa_enrol", actor_label="alice").exists()
    assert secret not in str(list(AuditEvent.objects.values_list("details", flat=True)))


def test_an_enrolled_person_gives_a_code_after_the_password(admin: User) -> None:
    with_authenticator(admin)
    client = Client()
    assert password_step(client, "alice")["Location"] == "/console/sign-in/code"
    wrong = client.post("/console/sign-in/code", {"code": "123456"})
    assert wrong.status_code == 401 and b"That code is not right" in wrong.content
    assert signed_in_as(client) is None
    right = client.post("/console/sign-in/code", {"code": fresh_code(admin)})
    assert right.status_code == 302 and right["Location"] == "/console/"
    assert signed_in_as(client) == "alice"


def test_a_recovery_code_signs_in_once(admin: User) -> None:
    from appliance.accounts import mfa

    secret = mfa.totp_begin(user=admin)
    codes = mfa.totp_confirm(user=admin, code=totp.code_at(secret, totp.current_step()))
    first = Client()
    password_step(first, "alice")
    assert first.post("/console/sign-in/code", {"code": codes[0]}).status_code == 302
    assert signed_in_as(first) == "alice"
    again = Client()
    password_step(again, "alice")
    assert again.post("/console/sign-in/code", {"code": codes[0]}).status_code == 401
    assert mfa.recovery_codes_left(admin) == 9
    assert AuditEvent.objects.filter(action="auth.recovery_code_use").count() == 1


def test_the_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(operator: User) -> None:
    client = Client()
    assert client.get("/console/users")["Location"] == "/console/sign-in?next=%2Fconsole%2Fusers"
    back = password_step(client, "olga", next="/console/usage")
    assert back["Location"] == "/console/usage"
    away = password_step(Client(), "olga", next="https://evil.example/console/")
    assert away["Location"] == "/console/"


def test_a_wrong_password_shows_an_error_and_repeated_ones_are_throttled(
    operator: User, settings: Any
) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    client = Client()
    wrong = password_step(client, "olga", "not it at all")
    assert wrong.status_code == 401 and b"Invalid user name or password." in wrong.content
    password_step(client, "olga", "not it at all")
    throttled = password_step(client, "olga")
    assert throttled.status_code == 429 and b"Too many failed sign-in attempts" in throttled.content
    assert signed_in_as(client) is None


def test_wrong_codes_are_throttled(admin: User, settings: Any) -> None:
    settings.APPLIANCE_LOGIN_MAX_FAILURES = 2
    with_authenticator(admin)
    client = Client()
    password_step(client, "alice")
    for _ in range(2):
        client.post("/console/sign-in/code", {"code": "000000"})
    throttled = client.post("/console/sign-in/code", {"code": fresh_code(admin)})
    assert throttled.status_code == 429
    assert signed_in_as(client) is None


def _age(client: Client, **delta: Any) -> None:
    record = UserSession.objects.get(pk=client.session["appliance_session"])
    UserSession.objects.filter(pk=record.pk).update(
        last_seen_at=record.last_seen_at - timedelta(**delta.get("idle", {})),
        started_at=record.started_at - timedelta(**delta.get("age", {})),
    )


def test_an_idle_session_is_signed_out_on_the_server(console_as: Any, operator: User) -> None:
    client = console_as(operator)
    _age(client, idle={"minutes": 16})
    response = client.get("/console/")
    assert response.status_code == 302 and response["Location"].startswith("/console/sign-in")
    assert b"signed out after a period without activity" in client.get("/console/sign-in").content
    assert not UserSession.objects.filter(user=operator).exists()
    ended = AuditEvent.objects.get(action="auth.session_end")
    assert ended.details["reason"] == "idle"


def test_a_session_past_its_absolute_limit_ends_even_if_active(
    console_as: Any, operator: User, settings: Any
) -> None:
    client = console_as(operator)
    _age(client, age={"seconds": settings.SESSION_COOKIE_AGE + 1})
    assert client.get("/console/").status_code == 302
    assert AuditEvent.objects.get(action="auth.session_end").details["reason"] == "absolute_limit"


def test_a_page_refreshing_itself_does_not_keep_a_session_alive(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    _age(client, idle={"minutes": 5})
    before = UserSession.objects.get(user=operator).last_seen_at
    assert client.get("/console/figures", headers={"X-Console-Background": "1"}).status_code == 200
    assert UserSession.objects.get(user=operator).last_seen_at == before
    client.get("/console/")
    assert UserSession.objects.get(user=operator).last_seen_at > before


def test_the_api_honours_the_idle_limit_of_a_cookie_session(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    assert client.get("/api/v1/auth/me").status_code == 200
    _age(client, idle={"minutes": 16})
    assert client.get("/api/v1/auth/me").status_code == 401


def test_a_person_ends_another_of_their_sessions(console_as: Any, operator: User) -> None:
    laptop, lost_phone = console_as(operator), console_as(operator)
    other = lost_phone.session["appliance_session"]
    page = laptop.get("/console/account").content.decode()
    assert "This session" in page and f"/console/account/sessions/{other}/end" in page
    confirm = laptop.get(f"/console/account/sessions/{other}/end")
    assert confirm.status_code == 200 and b"will be signed out at once" in confirm.content
    assert signed_in_as(lost_phone) == "olga"  # nothing happens before the confirmation
    assert laptop.post(f"/console/account/sessions/{other}/end").status_code == 302
    assert signed_in_as(lost_phone) is None
    assert signed_in_as(laptop) == "olga"
    event = AuditEvent.objects.get(action="auth.session_end")
    assert (event.actor_label, event.details["reason"]) == ("olga", "revoked")


def test_another_persons_session_cannot_be_ended_from_the_account_page(
    console_as: Any, operator: User, auditor: User
) -> None:
    theirs = console_as(auditor)
    record = theirs.session["appliance_session"]
    response = console_as(operator).post(f"/console/account/sessions/{record}/end")
    assert response.status_code == 404
    assert signed_in_as(theirs) == "audrey"


def test_signing_out_ends_the_session_on_the_server(console_as: Any, operator: User) -> None:
    client = console_as(operator)
    cookie = client.cookies["sessionid"].value
    assert client.post("/console/sign-out")["Location"] == "/console/sign-in"
    replay = Client()
    replay.cookies["sessionid"] = cookie
    assert replay.get("/console/").status_code == 302
    assert not UserSession.objects.filter(user=operator).exists()
    assert AuditEvent.objects.filter(action="auth.logout", actor_label="olga").count() == 1


def test_times_show_in_the_persons_time_zone_with_utc_on_hover(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    bad = client.post("/console/account/time-zone", {"time_zone": "Mars/Olympus"})
    assert bad.status_code == 422 and b"Pick a time zone from the list." in bad.content
    operator.refresh_from_db()
    assert operator.time_zone == "UTC"
    client.post("/console/account/time-zone", {"time_zone": "Asia/Tokyo"})
    page = client.get("/console/account").content.decode()
    assert re.search(r'<time datetime="[^"]+\+00:00" title="[^"]+ UTC">[^<]+ JST</time>', page)
    assert AuditEvent.objects.get(action="user.time_zone_change").details["to"] == "Asia/Tokyo"


def test_new_recovery_codes_replace_the_old_ones(console_as: Any, operator: User) -> None:
    with_authenticator(operator)
    client = console_as(operator)
    old = set(
        TotpDevice.objects.get(user=operator).user.recovery_codes.values_list(
            "code_hash", flat=True
        )
    )
    assert b"stop working" in client.get("/console/account/recovery-codes").content
    response = client.post("/console/account/recovery-codes")
    assert len(re.findall(r"<li>[0-9a-f]{5}-[0-9a-f]{5}</li>", response.content.decode())) == 10
    new = set(operator.recovery_codes.values_list("code_hash", flat=True))
    assert new and not (old & new)


def test_a_page_refreshing_itself_after_the_idle_limit_sends_the_whole_page_to_sign_in(
    console_as: Any, operator: User
) -> None:
    client = console_as(operator)
    _age(client, idle={"minutes": 16})
    response = client.get(
        "/console/figures",
        headers={
            "HX-Request": "true",
            "HX-Current-URL": "http://testserver/console/",
            "X-Console-Background": "1",
        },
    )
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/console/sign-in?next=%2Fconsole%2F"

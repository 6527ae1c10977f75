"""The console in a real browser, as an IT admin and an auditor use it: sign in with an
authenticator, import and approve a model, deploy it and watch the engine become ready, make an
application and a key, call the gateway with it, find the request in usage and in the audit log,
export the audit log and download the bundle, and be signed out when idle. The tests run in
order and share one appliance; each takes screenshots for the README."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from appliance.accounts.totp import code_at, current_step
from tests.browser.conftest import new_page, shoot
from tests.e2e.stack import REPO, Stack, free_port, serve

pytestmark = [pytest.mark.engine, pytest.mark.browser]

ENGINE_READY_MS = 300_000  # 30-90 s here; more when the machine is busy


class Authenticator:
    """An authenticator app: the code of the moment, each used once (the server refuses a code
    twice, so a second sign-in in the same 30 s takes the next step's code, or waits)."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.used = current_step()  # the step set up with (at the latest)

    def code(self) -> str:
        while True:
            step = max(self.used + 1, current_step() - 1)
            if step <= current_step() + 1:
                self.used = step
                return code_at(self.secret, step)
            time.sleep(1)


class World:
    """What the ordered steps pass on."""

    context: BrowserContext
    page: Page
    admin: Authenticator
    bob_context: BrowserContext
    bob: Page
    bob_authenticator: Authenticator
    model_url: str
    key: str


def sign_in(page: Page, username: str, password: str, authenticator: Authenticator) -> None:
    page.goto("/console/")
    expect(page).to_have_url(re.compile(r"/console/sign-in"))
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Authenticator code")).to_be_visible()
    page.get_by_label("Code").fill(authenticator.code())
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()


def credentials(stack: Stack) -> dict[str, Any]:
    import json

    return json.loads((stack.var / "demo-credentials.json").read_text())


def test_an_admin_signs_in_with_a_password_and_an_authenticator_code(
    live: Stack, browser: Browser
) -> None:
    World.context, World.page = new_page(browser, live)
    World.admin = Authenticator(live.totp_secret)
    page = World.page
    page.goto("/console/")
    shoot(page, "sign-in")
    creds = credentials(live)
    page.get_by_label("User name").fill(creds["username"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("alert")).to_contain_text("Invalid user name or password.")

    sign_in(page, creds["username"], creds["password"], World.admin)
    expect(page.get_by_role("link", name=creds["username"])).to_be_visible()
    expect(page.locator("#nodes-online")).to_have_text("1")


def test_an_idle_session_is_signed_out_by_the_server(live: Stack, browser: Browser) -> None:
    """The dashboard refreshes itself every 10 s, which is not activity: after the idle limit
    (here 12 s, on a second server over the same database) its next refresh finds the session
    ended and the page goes to the sign-in page, saying why."""
    url = serve(live, free_port(), {"APPLIANCE_SESSION_IDLE_SECONDS": "12"}, "server-idle.log")
    context = browser.new_context(base_url=url, viewport={"width": 1280, "height": 860})
    try:
        page = context.new_page()
        creds = credentials(live)
        sign_in(page, creds["username"], creds["password"], World.admin)
        expect(page).to_have_url(re.compile(r"/console/sign-in"), timeout=45_000)
        expect(page.get_by_role("status")).to_contain_text("signed out after a period without")
        page.goto("/console/account")
        expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
    finally:
        context.close()


def test_an_admin_adds_a_second_admin_who_sets_up_an_authenticator(
    live: Stack, browser: Browser
) -> None:
    page = World.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Users").click()
    page.get_by_role("link", name="Create a user").click()
    page.get_by_label("User name").fill("bob")
    page.get_by_label("Full name").fill("Bob Approver")
    page.get_by_label("Role").select_option("admin")
    page.get_by_role("button", name="Create the user").click()
    password = page.locator("#initial-password").inner_text().strip()
    assert len(password) >= 20

    World.bob_context, bob = new_page(browser, live)
    World.bob = bob
    bob.goto("/console/sign-in")
    bob.get_by_label("User name").fill("bob")
    bob.get_by_label("Password").fill(password)
    bob.get_by_role("button", name="Continue").click()
    expect(bob.get_by_role("heading", name="Set up an authenticator")).to_be_visible()
    shoot(bob, "authenticator")
    secret = bob.locator("#totp-secret").inner_text().replace(" ", "")
    World.bob_authenticator = Authenticator(secret)
    World.bob_authenticator.used = current_step() - 2
    bob.get_by_label("Code from the app").fill(World.bob_authenticator.code())
    bob.get_by_role("button", name="Confirm").click()
    expect(bob.locator("#recovery-codes li")).to_have_count(10)
    bob.get_by_role("link", name="I have kept them: continue").click()
    expect(bob.get_by_role("heading", name="Dashboard")).to_be_visible()


def test_a_model_is_imported_by_one_admin_and_approved_by_another(live: Stack) -> None:
    page = World.page
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    shoot(page, "models")
    page.get_by_role("link", name="Import a model").click()
    page.get_by_label("Name").fill("clinic-llama")
    page.get_by_label("Directory").fill(str(live.var / "import" / "demo" / "demo-llama"))
    page.get_by_role("button", name="Import the model").click()
    expect(page.get_by_role("heading", name="Model clinic-llama")).to_be_visible()
    # The import job's progress refreshes in place until the files are hashed.
    expect(page.get_by_text("pending", exact=False).first).to_be_visible(timeout=60_000)
    expect(page.get_by_role("button", name="Approve clinic-llama")).to_have_count(0)
    World.model_url = page.url

    bob = World.bob
    bob.goto(World.model_url)
    bob.get_by_role("button", name="Approve clinic-llama").click()
    expect(bob.locator(".notice")).to_be_visible()
    expect(bob.get_by_text("approved", exact=False).first).to_be_visible()
    shoot(bob, "model")


def nav(page: Page, entry: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=entry).click()


def test_a_deployment_of_the_model_becomes_ready_on_the_cpu_engine(live: Stack) -> None:
    page = World.page
    nav(page, "Deployments")
    page.get_by_role("link", name="New deployment").click()
    page.get_by_label("Name").fill("clinic-llama")
    page.get_by_label("Model").select_option(label="clinic-llama")
    page.get_by_label("Device").select_option("cpu")
    page.get_by_label("Node").select_option(label="browser-node")
    page.get_by_label("Context length (tokens)").fill("512")
    page.get_by_role("button", name="Create deployment").click()
    expect(page.get_by_role("heading", name=re.compile("clinic-llama"))).to_be_visible()
    # The engine's state refreshes in place: pending, starting, then ready.
    expect(page.get_by_text("1 of 1 engine ready")).to_be_visible(timeout=ENGINE_READY_MS)
    shoot(page, "deployment")
    nav(page, "Nodes & GPUs")
    page.get_by_role("link", name="browser-node").click()
    shoot(page, "node")


def test_an_application_gets_a_grant_and_a_key_that_calls_the_gateway(live: Stack) -> None:
    page = World.page
    nav(page, "Applications")
    page.get_by_role("link", name="Create an application").click()
    page.get_by_label("Name").fill("clinic-notes")
    page.get_by_label("Department").fill("Cardiology")
    page.get_by_role("button", name="Create the application").click()
    expect(page.get_by_role("heading", name=re.compile("clinic-notes"))).to_be_visible()
    page.get_by_role("link", name="Add a grant").click()
    page.get_by_label("Model", exact=True).select_option(label="clinic-llama")
    page.get_by_role("button", name="Add the grant").click()
    page.get_by_role("link", name="Create an API key").click()
    page.get_by_label("Key name").fill("notes-service")
    page.get_by_role("button", name="Create the key").click()
    World.key = page.locator(".secret").inner_text().strip()
    assert World.key.startswith("apk_")
    page.goto(page.url.rsplit("/keys/", 1)[0])  # the application's page, the key not on it
    assert World.key not in page.content()
    shoot(page, "application")

    answer = httpx.post(
        f"{live.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {World.key}"},
        json={
            "model": "clinic-llama",
            "messages": [{"role": "user", "content": "Summarise: chest pain since morning."}],
            "max_tokens": 8,
        },
        timeout=120,
        trust_env=False,
    )
    assert answer.status_code == 200, answer.text


def test_the_request_shows_in_usage_and_in_the_audit_log(live: Stack) -> None:
    page = World.page
    nav(page, "Usage & cost")
    page.get_by_role("link", name="Requests").click()
    row = page.get_by_role("row").filter(has_text="clinic-notes")
    expect(row.first).to_contain_text("clinic-llama")
    expect(row.first).to_contain_text("200")
    shoot(page, "usage")

    nav(page, "Audit log")
    page.get_by_label("Action").fill("inference")
    page.get_by_role("button", name="Filter events").click()
    expect(page.get_by_role("row").filter(has_text="clinic-notes").first).to_contain_text(
        "inference"
    )
    shoot(page, "audit")

    nav(page, "Dashboard")
    top = page.get_by_role("row").filter(has_text="clinic-notes")
    expect(top.first).to_be_visible()
    expect(page.locator("#engines-ready")).to_have_text("1")
    shoot(page, "dashboard")


def test_an_auditor_exports_the_audit_log_and_verifies_the_bundle_offline(
    live: Stack, browser: Browser, tmp_path: Path
) -> None:
    page = World.page
    nav(page, "Users")
    page.get_by_role("link", name="Create a user").click()
    page.get_by_label("User name").fill("audrey")
    page.get_by_label("Role").select_option("auditor")
    page.get_by_role("button", name="Create the user").click()
    password = page.locator("#initial-password").inner_text().strip()

    context, auditor = new_page(browser, live)
    try:
        auditor.goto("/console/sign-in")
        auditor.get_by_label("User name").fill("audrey")
        auditor.get_by_label("Password").fill(password)
        auditor.get_by_role("button", name="Continue").click()
        expect(auditor.get_by_role("heading", name="Dashboard")).to_be_visible()
        nav(auditor, "Audit log")
        auditor.get_by_role("link", name="Exports").first.click()
        auditor.get_by_role("button", name="Request the export").click()
        # The export's row refreshes in place until the bundle is built.
        link = auditor.get_by_role("link", name="Download the bundle").first
        expect(link).to_be_visible(timeout=120_000)
        shoot(auditor, "audit-export")
        with auditor.expect_download() as download:
            link.click()
        bundle = tmp_path / "bundle.zip"
        download.value.save_as(bundle)
        # The key that signed it, as the console shows it (the verifier trusts nothing inside
        # the bundle for this; an auditor compares it with the one on paper).
        nav(auditor, "Audit log")
        fingerprint = auditor.locator("#active-key-fingerprint").inner_text().strip()
        shoot(auditor, "audit-key")
    finally:
        context.close()
    assert zipfile.is_zipfile(bundle)
    checked = subprocess.run(  # noqa: S603 - our own verifier on our own file
        [
            sys.executable,
            str(REPO / "compliance" / "verify_export.py"),
            str(bundle),
            "--fingerprint",
            fingerprint,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

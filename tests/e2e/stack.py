"""Real processes for the end-to-end tests: the control plane under uvicorn on SQLite in a
temporary directory, the node agent CLI, and the CPU build of vLLM in its own virtualenv."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.accounts.totp import code_at, current_step

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "e2e-secret-key-that-is-long-enough-to-pass-the-checks-0123456789"


def console_first_sign_in(browser: httpx.Client, *, username: str, password: str) -> str:
    """Sign in to the console as an admin without an authenticator yet, setting one up from the
    key the page shows, as a person with an authenticator app would; returns its secret."""
    browser.get("/console/sign-in")
    answer = browser.post(
        "/console/sign-in",
        data={"username": username, "password": password, "csrfmiddlewaretoken": _csrf(browser)},
    )
    assert answer.headers.get("location") == "/console/sign-in/authenticator", answer.text
    page = browser.get("/console/sign-in/authenticator").text
    secret = re.search(r'id="totp-secret" class="mono">([A-Z2-7 ]+)<', page)
    assert secret, page
    key = secret[1].replace(" ", "")
    answer = browser.post(
        "/console/sign-in/authenticator",
        data={"code": code_at(key, current_step()), "csrfmiddlewaretoken": _csrf(browser)},
    )
    assert answer.status_code == 200 and "Recovery codes" in answer.text, answer.text
    return key


def _csrf(browser: httpx.Client) -> str:
    return browser.cookies["csrftoken"]


def engine_python() -> str:
    """The Python with vLLM (``make engine`` builds .venv-engine). Without one the engine tests
    skip locally, and fail in CI, where a skipped engine test would hide a missing feature."""
    candidate = os.environ.get("APPLIANCE_ENGINE_PYTHON") or str(REPO / ".venv-engine/bin/python")
    if not Path(candidate).exists():
        message = f"no vLLM engine Python at {candidate} (run `make engine`)"
        if os.environ.get("CI") or os.environ.get("APPLIANCE_REQUIRE_ENGINE"):
            pytest.fail(message)
        pytest.skip(message)
    return candidate


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class Stack:
    var: Path
    url: str
    env: dict[str, str]
    api: httpx.Client = field(init=False)
    totp_secret: str = field(init=False, default="")
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )

    def agent(
        self, *args: str, env: dict[str, str] | None = None, state_dir: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``appliance-agent`` with this stack's agent state directory (or another)."""
        return subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "appliance.agent.cli",
                "--state-dir",
                str(state_dir or self.var / "agent"),
                *args,
            ],
            cwd=REPO,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            check=False,
        )

    def spawn(
        self, args: list[str], log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        handle = (self.var / log).open("wb")
        process = subprocess.Popen(  # noqa: S603
            args, cwd=REPO, env={**self.env, **(env or {})}, stdout=handle, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def sign_in(self) -> None:
        """An admin's API token, as a new admin gets one: the first sign-in in the console
        (password, then setting up an authenticator, which admins must have), then a token."""
        credentials = json.loads((self.var / "demo-credentials.json").read_text())
        with httpx.Client(base_url=self.url, trust_env=False) as browser:
            self.totp_secret = console_first_sign_in(browser, **credentials)
            csrf = browser.get("/api/v1/auth/csrf").json()["csrf_token"]
            answer = browser.post(
                "/api/v1/tokens", json={"name": "e2e"}, headers={"X-CSRFToken": csrf}
            )
            assert answer.status_code == 201, answer.text
        self.api = httpx.Client(
            base_url=f"{self.url}/api/v1",
            headers={"Authorization": f"Bearer {answer.json()['secret']}"},
            trust_env=False,
            timeout=30,
        )

    def stop(self) -> None:
        for process in reversed(self.processes):  # the agent first: it stops its engines
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=40)
                except subprocess.TimeoutExpired:
                    process.kill()


def start_stack(var: Path) -> Stack:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("APPLIANCE_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
    }
    env.update(
        APPLIANCE_VAR_DIR=str(var),
        APPLIANCE_SECRET_KEY=SECRET_KEY,
        APPLIANCE_HEARTBEAT_SECONDS="2",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    stack = Stack(var=var, url=f"http://127.0.0.1:{port}", env=env)
    stack.manage("migrate", "--noinput", "-v0")
    stack.manage("bootstrap_admin")
    stack.manage("make_demo_model")
    serve(stack, port)
    stack.sign_in()
    return stack


def serve(
    stack: Stack, port: int, env: dict[str, str] | None = None, log: str = "server.log"
) -> str:
    """Run the control plane under uvicorn on ``port`` (another instance over the same database
    may run with other settings); returns its URL once it answers."""
    stack.spawn(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "appliance.asgi:application",
            "--port",
            str(port),
            "--no-access-log",  # as run_appliance: a key sent in a URL must not reach a log
        ],
        log,
        env,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the control plane to answer /healthz", up, timeout=60, every=0.3)
    return url

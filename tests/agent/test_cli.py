"""``appliance-agent``: enrollment and start-up errors, and the credential file on disk."""

from __future__ import annotations

import json
import logging
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.agent import cli
from appliance.agent import client as control_plane
from appliance.agent.config import (
    CREDENTIAL_FILE,
    Enrollment,
    NotEnrolled,
    load_enrollment,
    save_enrollment,
)
from appliance.agent.nvml import HostGpus

TOKEN = "enr_s3cret-enrollment-token"
CREDENTIAL = "nod_s3cret-node-credential"
SERVER = "https://control.example"


def enrollment(server: str = SERVER) -> Enrollment:
    return Enrollment(server=server, node_id=7, name="gpu-01", credential=CREDENTIAL)


@pytest.fixture(autouse=True)
def _no_token_or_gpus_from_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLIANCE_ENROLLMENT_TOKEN", raising=False)
    monkeypatch.delenv("APPLIANCE_AGENT_STATE_DIR", raising=False)
    monkeypatch.setattr(cli, "collect", lambda: HostGpus(None, None, (), "NVML library not found"))


@pytest.fixture(autouse=True)
def _keep_httpx_logging() -> Iterator[None]:
    """``main`` quietens httpx's logger for the process; give other tests theirs back."""
    logger = logging.getLogger("httpx")
    level = logger.level
    yield
    logger.setLevel(level)


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens once the socket is closed


def test_enroll_without_a_token_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["--state-dir", str(tmp_path), "enroll", "--server", SERVER])

    assert status == cli.EXIT_USAGE == 2
    assert "give --token or set APPLIANCE_ENROLLMENT_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / CREDENTIAL_FILE).exists()


def test_enroll_when_already_enrolled_is_a_usage_error_and_keeps_the_credential(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_enrollment(tmp_path, enrollment())
    before = (tmp_path / CREDENTIAL_FILE).read_bytes()

    status = cli.main(
        ["--state-dir", str(tmp_path), "enroll", "--server", SERVER, "--token", TOKEN]
    )

    assert status == 2
    assert "already enrolled" in capsys.readouterr().err
    assert (tmp_path / CREDENTIAL_FILE).read_bytes() == before


def test_enroll_with_an_unreachable_control_plane_fails_in_one_line_without_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(
        ["--state-dir", str(tmp_path), "enroll", "--server", closed_port_url(), "--token", TOKEN]
    )

    out, err = capsys.readouterr()
    assert status == cli.EXIT_FAILED == 1
    assert err.startswith("appliance-agent: enrollment failed: ")
    assert err.count("\n") == 1
    assert TOKEN not in err
    assert TOKEN not in out
    assert not (tmp_path / CREDENTIAL_FILE).exists()


def test_enroll_reads_the_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APPLIANCE_ENROLLMENT_TOKEN", TOKEN)

    status = cli.main(["--state-dir", str(tmp_path), "enroll", "--server", closed_port_url()])

    assert status == 1  # it got past the token check and tried the server
    assert "enrollment failed" in capsys.readouterr().err


def test_run_without_enrollment_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = cli.main(["--state-dir", str(tmp_path), "run"])

    err = capsys.readouterr().err
    assert status == 2
    assert "appliance-agent enroll" in err
    assert err.count("\n") == 1


class EnrollServer:
    """The control plane's enroll endpoint, recording what it was sent."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path != "/api/agent/v1/enroll" or request.method != "POST":
            return httpx.Response(404, json={"code": "not_found", "detail": "No."})
        if self.status != 200:
            return httpx.Response(
                self.status, json={"code": "invalid_token", "detail": "Unknown or used token."}
            )
        return httpx.Response(200, json={"node_id": 42, "name": "gpu-01", "credential": CREDENTIAL})


@pytest.fixture
def enroll_server(monkeypatch: pytest.MonkeyPatch) -> EnrollServer:
    server = EnrollServer()

    def http_client(
        url: str, credential: str | None = None, verify: bool | str = True
    ) -> httpx.Client:
        assert credential is None  # enrolling: there is no credential yet
        return httpx.Client(base_url=url, transport=httpx.MockTransport(server))

    monkeypatch.setattr(control_plane, "http_client", http_client)
    return server


def test_enroll_exchanges_the_token_and_saves_a_private_credential_file(
    tmp_path: Path, enroll_server: EnrollServer, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"

    status = cli.main(
        ["--state-dir", str(state), "enroll", "--server", SERVER, "--token", TOKEN, "--name", "n1"]
    )

    out, err = capsys.readouterr()
    assert status == 0
    sent = json.loads(enroll_server.requests[0].content)
    assert sent["token"] == TOKEN
    assert sent["name"] == "n1"
    assert sent["platform"]["gpus"] == 0
    path = state / CREDENTIAL_FILE
    assert json.loads(path.read_text()) == {
        "server": SERVER,
        "node_id": 42,
        "name": "gpu-01",
        "credential": CREDENTIAL,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert "enrolled as node gpu-01 (id 42)" in out
    assert CREDENTIAL not in out + err
    assert TOKEN not in out + err


def test_enroll_refused_by_the_control_plane_saves_nothing(
    tmp_path: Path, enroll_server: EnrollServer, capsys: pytest.CaptureFixture[str]
) -> None:
    enroll_server.status = 401

    status = cli.main(
        ["--state-dir", str(tmp_path), "enroll", "--server", SERVER, "--token", TOKEN]
    )

    err = capsys.readouterr().err
    assert status == 1
    assert "Unknown or used token." in err
    assert TOKEN not in err
    assert not (tmp_path / CREDENTIAL_FILE).exists()


def test_save_enrollment_writes_a_file_only_its_owner_can_read(tmp_path: Path) -> None:
    path = save_enrollment(tmp_path / "state", enrollment())

    assert path == tmp_path / "state" / CREDENTIAL_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [CREDENTIAL_FILE]  # no temporary left
    assert load_enrollment(path.parent) == enrollment()


def test_save_enrollment_replaces_an_existing_credential(tmp_path: Path) -> None:
    save_enrollment(tmp_path, enrollment())
    replacement = Enrollment(server=SERVER, node_id=8, name="gpu-02", credential="nod_new")

    save_enrollment(tmp_path, replacement)

    assert load_enrollment(tmp_path) == replacement
    assert stat.S_IMODE((tmp_path / CREDENTIAL_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_load_enrollment_refuses_a_file_others_can_read(tmp_path: Path, mode: int) -> None:
    path = save_enrollment(tmp_path, enrollment())
    path.chmod(mode)

    with pytest.raises(NotEnrolled, match="mode 0600"):
        load_enrollment(tmp_path)


def test_load_enrollment_without_a_file_says_to_enroll(tmp_path: Path) -> None:
    with pytest.raises(NotEnrolled, match="appliance-agent enroll"):
        load_enrollment(tmp_path)


def test_enrollment_repr_hides_the_credential() -> None:
    shown: Any = enrollment()

    assert CREDENTIAL not in repr(shown)
    assert CREDENTIAL not in str(shown)
    assert CREDENTIAL not in f"{shown}"
    assert "gpu-01" in repr(shown)


@pytest.mark.parametrize(
    ("server", "allowed"),
    [
        ("http://control.example", False),
        ("http://10.0.0.5:8000", False),
        ("ftp://control.example", False),
        ("http://127.0.0.1:8000", True),
        ("http://localhost:8000", True),
        ("https://control.example", True),
    ],
)
def test_enroll_refuses_plain_http_except_to_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server: str, allowed: bool
) -> None:
    assert (cli._server_allowed(server, insecure=False) is None) == allowed
    if not allowed:
        status = cli.main(
            ["--state-dir", str(tmp_path), "enroll", "--server", server, "--token", TOKEN]
        )
        assert status == cli.EXIT_USAGE
        assert "http" in capsys.readouterr().err
        assert not (tmp_path / CREDENTIAL_FILE).exists()


def test_insecure_http_can_be_allowed_explicitly() -> None:
    assert cli._server_allowed("http://10.0.0.5:8000", insecure=True) is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "8.8.8.8", "2001:4860::8888", "gpu-01"])  # noqa: S104
def test_engines_may_not_listen_on_a_wildcard_or_public_address(host: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--engine-host", host])
    assert exited.value.code == 2


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.20.0.7", "192.168.1.4", "fd00::7"])
def test_engines_may_listen_on_loopback_or_a_private_address(host: str) -> None:
    assert cli.private_address(host) == host

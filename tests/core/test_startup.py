"""Production mode refuses unsafe settings, each problem with a stable id, before Django starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.core.startup import INSECURE_SECRET_PREFIX, production_problems

REPO = Path(__file__).resolve().parents[2]
GOOD_KEY = "k" * 60
POSTGRES = "django.db.backends.postgresql"
SQLITE = "django.db.backends.sqlite3"
GOOD: dict[str, Any] = {
    "debug": False,
    "secret_key": GOOD_KEY,
    "database_engine": POSTGRES,
    "allowed_hosts": ["appliance.example"],
    "witness_address": "siem.example:6514",
    "witness_tls": True,
    "oidc_issuer": "https://idp.hospital.example/realms/staff",
    "ldap_url": "ldaps://dc1.hospital.example",
}


def ids_of(problems: list[str]) -> list[str]:
    return [problem.split(":", 1)[0] for problem in problems]


def test_good_settings_have_no_problems() -> None:
    assert production_problems(**GOOD) == []


def test_a_fifty_character_key_is_long_enough() -> None:
    assert production_problems(**{**GOOD, "secret_key": "x" * 50}) == []


@pytest.mark.parametrize(
    ("change", "problem_id"),
    [
        ({"debug": True}, "appliance.E001"),
        ({"secret_key": ""}, "appliance.E002"),
        ({"secret_key": "x" * 49}, "appliance.E002"),
        ({"secret_key": INSECURE_SECRET_PREFIX + "y" * 60}, "appliance.E002"),
        ({"database_engine": SQLITE}, "appliance.E003"),
        ({"allowed_hosts": []}, "appliance.E004"),
        ({"allowed_hosts": ["appliance.example", "*"]}, "appliance.E004"),
        ({"witness_tls": False}, "appliance.E005"),
        ({"oidc_issuer": "http://idp.hospital.example"}, "appliance.E006"),
        ({"ldap_url": "ldap://dc1.hospital.example"}, "appliance.E007"),
    ],
)
def test_each_unsafe_value_is_reported_with_its_own_id(
    change: dict[str, Any], problem_id: str
) -> None:
    assert ids_of(production_problems(**{**GOOD, **change})) == [problem_id]


def test_all_problems_are_reported_at_once() -> None:
    problems = production_problems(
        debug=True,
        secret_key="",
        database_engine=SQLITE,
        allowed_hosts=["*"],
        witness_address="siem.example:514",
        witness_tls=False,
        oidc_issuer="http://idp.hospital.example",
        ldap_url="ldap://dc1.hospital.example",
    )
    assert ids_of(problems) == [
        "appliance.E001",
        "appliance.E002",
        "appliance.E003",
        "appliance.E004",
        "appliance.E005",
        "appliance.E006",
        "appliance.E007",
    ]


def test_a_witness_without_tls_is_fine_when_the_witness_is_off() -> None:
    assert production_problems(**{**GOOD, "witness_address": "", "witness_tls": False}) == []


def start_django(
    env: dict[str, str], code: str = "import django; django.setup()"
) -> subprocess.CompletedProcess[str]:
    """``django.setup()`` (or ``code``) in a fresh interpreter with exactly these appliance
    variables."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("APPLIANCE_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
    }
    return subprocess.run(  # noqa: S603 - our own interpreter, running the tests' code
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**base, "DJANGO_SETTINGS_MODULE": "appliance.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_production_with_unsafe_environment_refuses_to_start(tmp_path: Path) -> None:
    result = start_django({"APPLIANCE_ENV": "production", "APPLIANCE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    for problem_id in ("appliance.E002", "appliance.E003", "appliance.E004"):
        assert problem_id in result.stderr
    assert "appliance.E001" not in result.stderr
    assert not (tmp_path / "secret_key").exists()  # no embedded key is made in production


def test_production_with_debug_on_refuses_to_start(tmp_path: Path) -> None:
    result = start_django(
        {
            "APPLIANCE_ENV": "production",
            "APPLIANCE_VAR_DIR": str(tmp_path),
            "APPLIANCE_DEBUG": "true",
            "APPLIANCE_SECRET_KEY": GOOD_KEY,
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
            "APPLIANCE_ALLOWED_HOSTS": "appliance.example",
        }
    )
    assert result.returncode != 0
    assert "appliance.E001" in result.stderr
    assert "appliance.E003" not in result.stderr


def test_production_with_safe_environment_starts(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text(GOOD_KEY + "\n", encoding="utf-8")
    for secret in (
        {"APPLIANCE_SECRET_KEY": GOOD_KEY},
        {"APPLIANCE_SECRET_KEY_FILE": str(secret_file)},
    ):
        result = start_django(
            {
                "APPLIANCE_ENV": "production",
                "APPLIANCE_VAR_DIR": str(tmp_path / "var"),
                "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres",
                "APPLIANCE_ALLOWED_HOSTS": "appliance.example",
                **secret,
            }
        )
        assert result.returncode == 0, result.stderr


def test_unknown_appliance_env_refuses_to_start(tmp_path: Path) -> None:
    result = start_django({"APPLIANCE_ENV": "prod", "APPLIANCE_VAR_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "APPLIANCE_ENV must be embedded or production" in result.stderr


def test_embedded_mode_starts_without_any_configuration(tmp_path: Path) -> None:
    result = start_django({"APPLIANCE_VAR_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    key_file = tmp_path / "secret_key"
    assert key_file.read_text().startswith(INSECURE_SECRET_PREFIX)
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_an_audit_origin_that_cannot_name_a_signed_note_refuses_to_start(tmp_path: Path) -> None:
    for origin in ("st marys/audit", "a+b", "tab\there"):
        result = start_django(
            {"APPLIANCE_AUDIT_ORIGIN": origin, "APPLIANCE_VAR_DIR": str(tmp_path)}
        )
        assert result.returncode != 0
        assert "APPLIANCE_AUDIT_ORIGIN must be printable" in result.stderr

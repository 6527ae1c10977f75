"""Typed readers of environment settings: wrong values stop the process with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from appliance.core.env import env_bool, env_int, env_list, env_secret, env_str

NAME = "APPLIANCE_TEST_SETTING"


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NAME, raising=False)
    monkeypatch.delenv(f"{NAME}_FILE", raising=False)


def test_env_str_strips_and_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_str(NAME, "fallback") == "fallback"
    monkeypatch.setenv(NAME, "   ")
    assert env_str(NAME, "fallback") == "fallback"
    monkeypatch.setenv(NAME, "  value  ")
    assert env_str(NAME, "fallback") == "value"


@pytest.mark.parametrize("raw", ["true", "TRUE", "1", "yes", "On", " true "])
def test_env_bool_accepts_true_spellings(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, False) is True


@pytest.mark.parametrize("raw", ["false", "0", "no", "OFF"])
def test_env_bool_accepts_false_spellings(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)
    assert env_bool(NAME, True) is False


def test_env_bool_unset_or_blank_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_bool(NAME, True) is True
    monkeypatch.setenv(NAME, "")
    assert env_bool(NAME, False) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "enabled", "t"])
def test_env_bool_refuses_anything_else_naming_the_variable(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=NAME):
        env_bool(NAME, False)


def test_env_int_parses_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_int(NAME, 7) == 7
    monkeypatch.setenv(NAME, " 42 ")
    assert env_int(NAME, 7) == 42


@pytest.mark.parametrize("raw", ["forty", "1.5", "1e3"])
def test_env_int_refuses_non_integers(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, raw)
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be an integer"):
        env_int(NAME, 7)


def test_env_int_enforces_the_minimum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, "59")
    with pytest.raises(ImproperlyConfigured, match=f"{NAME} must be at least 60"):
        env_int(NAME, 3600, minimum=60)
    monkeypatch.setenv(NAME, "60")
    assert env_int(NAME, 3600, minimum=60) == 60


def test_env_int_minimum_does_not_apply_to_the_default() -> None:
    assert env_int(NAME, 0, minimum=1) == 0


def test_env_list_splits_on_commas_and_drops_blanks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(NAME, " a.example , ,b.example,")
    assert env_list(NAME, ["default"]) == ["a.example", "b.example"]


def test_env_list_unset_or_blank_is_a_copy_of_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = ["x"]
    result = env_list(NAME, default)
    assert result == ["x"]
    assert result is not default
    monkeypatch.setenv(NAME, "  ")
    assert env_list(NAME, default) == ["x"]


def test_env_secret_reads_the_file_before_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-the-file\n", encoding="utf-8")
    monkeypatch.setenv(NAME, "from-the-variable")
    monkeypatch.setenv(f"{NAME}_FILE", str(secret_file))
    assert env_secret(NAME) == "from-the-file"


def test_env_secret_falls_back_to_the_variable_then_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert env_secret(NAME, "dflt") == "dflt"
    monkeypatch.setenv(NAME, "from-the-variable")
    assert env_secret(NAME, "dflt") == "from-the-variable"


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_env_secret_unreadable_file_is_improperly_configured(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    if kind == "directory":
        path.mkdir()
    monkeypatch.setenv(NAME, "from-the-variable")
    monkeypatch.setenv(f"{NAME}_FILE", str(path))
    with pytest.raises(ImproperlyConfigured, match=f"{NAME}_FILE cannot be read") as caught:
        env_secret(NAME)
    assert "hidden" not in str(caught.value)

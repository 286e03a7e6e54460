"""Settings parsing: what the environment may say, and how a mistake is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError, field_validator, model_validator

from {{ cookiecutter.package_name }} import settings as settings_module
from {{ cookiecutter.package_name }}.settings import (
    ConfigurationError,
    Settings,
    describe,
    get_settings,
    load_settings,
)


@pytest.fixture(autouse=True)
def unset_settings_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it is about; the shell's own do not leak in.

    Those without a default stay as the test session set them (tests/plugins/): a
    service cannot start without them, and these tests are about the others.
    """
    for name, field in Settings.model_fields.items():
        if not field.is_required():
            monkeypatch.delenv(name.upper(), raising=False)


def test_local_accepts_the_defaults() -> None:
    assert Settings(_env_file=None, environment="local").environment == "local"


def test_log_level_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "debug")
    assert Settings(_env_file=None).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", []),
        ("https://a.example", ["https://a.example"]),
        (" https://a.example , https://b.example,", ["https://a.example", "https://b.example"]),
    ],
)
def test_cors_origins_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch, given: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", given)
    assert Settings(_env_file=None).cors_origins == expected


def test_cors_origins_may_be_given_as_a_list() -> None:
    settings = Settings(_env_file=None, cors_origins=["https://a.example"])
    assert settings.cors_origins == ["https://a.example"]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "0"),
        ("PORT", "65536"),
        ("WEB_CONCURRENCY", "0"),
        ("KEEPALIVE_SECONDS", "0"),
        ("HEALTH_CHECK_TIMEOUT_SECONDS", "0"),
        ("MAX_REQUEST_BODY_BYTES", "0"),
        ("ENVIRONMENT", "prod"),
    ],
)
def test_out_of_range_values_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    assert describe(caught.value).startswith(f"invalid configuration: {variable}: ")


def test_a_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=WARNING\nPORT=9000\n")
    monkeypatch.setenv("PORT", "9100")
    settings = Settings(_env_file=env_file)
    assert (settings.log_level, settings.port) == ("WARNING", 9100)


def test_bad_variables_are_named_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None)
    message = describe(caught.value)
    assert "\n" not in message
    assert "LOG_LEVEL" in message
    assert "WEB_CONCURRENCY" in message


def test_load_settings_exits_with_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "LOG_LEVEL" in str(caught.value.code)


def test_get_settings_loads_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[Settings] = []

    def counting_load() -> Settings:
        loads.append(Settings(_env_file=None))
        return loads[-1]

    monkeypatch.setattr(settings_module, "load_settings", counting_load)
    get_settings.cache_clear()
    try:
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
    assert len(loads) == 1


def test_each_bad_variable_is_named_once_and_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    # A bad entry in a list is reported under its variable, not under its index.
    monkeypatch.setenv("LOG_LEVEL", "LOUD")
    with pytest.raises(ValidationError) as caught:
        Settings(_env_file=None, cors_origins=[1])
    problems = describe(caught.value).removeprefix("invalid configuration: ").split("; ")
    assert [problem.partition(": ")[0] for problem in problems] == ["LOG_LEVEL", "CORS_ORIGINS"]


def test_requests_get_four_fifths_of_the_grace_and_at_least_a_second() -> None:
    assert settings_module.request_grace(25) == 20
    assert settings_module.request_grace(1) == 1


class Checked(BaseModel):
    """Stands in for the settings' own validators, which differ with the options."""

    port: int

    @field_validator("port")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be even")
        return value

    @model_validator(mode="after")
    def _not_zero(self) -> Checked:
        if self.port == 0:
            raise ValueError("port 0 is no port")
        return self


def test_a_validators_message_is_shown_without_pydantics_prefix() -> None:
    with pytest.raises(ValidationError) as field:
        Checked(port=3)
    assert describe(field.value) == "invalid configuration: PORT: must be even"
    # A rule over several settings names none of them.
    with pytest.raises(ValidationError) as whole:
        Checked(port=0)
    assert describe(whole.value) == "invalid configuration: port 0 is no port"

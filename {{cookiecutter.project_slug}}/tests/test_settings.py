from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import (
    ConfigurationError,
    Settings,
    describe,
    load_settings,
)
{%- if cookiecutter.use_postgres %}


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@db.example.com:5432/app",
        "postgresql://u:p@db.example.com:5432/app",
        "postgresql+asyncpg://u:p@db.example.com:5432/app",
    ],
)
def test_provider_database_urls_are_normalised_for_asyncpg(given: str) -> None:
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_url == "postgresql+asyncpg://u:p@db.example.com:5432/app"


def test_libpq_options_from_providers_are_translated_for_asyncpg() -> None:
    given = "postgres://u:p@db.example.com/app?sslmode=require&channel_binding=require"
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_url == "postgresql+asyncpg://u:p@db.example.com/app?ssl=require"


@pytest.mark.parametrize("given", ["mysql://u:p@h/db", "not a url", "postgresql://"])
def test_a_malformed_database_url_is_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, database_url=given)
{%- endif %}


@pytest.mark.parametrize("secret", ["", "change-me"])
def test_production_refuses_a_placeholder_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(_env_file=None, environment="production", secret_key=secret)


def test_credentials_stay_out_of_the_repr() -> None:
    settings = Settings(
        _env_file=None,
        secret_key="s3cret-key",
{%- if cookiecutter.use_postgres %}
        database_url="postgresql://u:pg-password@h/db",
{%- endif %}
{%- if cookiecutter.use_redis %}
        redis_url="redis://:redis-password@h:6379/0",
{%- endif %}
    )
    text = repr(settings)
    assert "s3cret-key" not in text
{%- if cookiecutter.use_postgres %}
    assert "pg-password" not in text
{%- endif %}
{%- if cookiecutter.use_redis %}
    assert "redis-password" not in text
{%- endif %}


def test_local_accepts_an_empty_secret() -> None:
    assert Settings(_env_file=None, environment="local").environment == "local"


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

"""DATABASE_URL parsing: providers' URLs become asyncpg URLs, bad ones are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from {{ cookiecutter.package_name }}.settings import Settings


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


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("mysql://u:p@h/db", "must be a PostgreSQL URL"),
        ("not a url", "must be a PostgreSQL URL"),
        ("postgresql://", "has no host"),
        ("postgresql://u:p@h:port/db", "is not a valid URL"),
    ],
)
def test_a_malformed_database_url_is_refused(given: str, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        Settings(_env_file=None, database_url=given)


def test_the_database_password_stays_out_of_the_repr() -> None:
    settings = Settings(_env_file=None, database_url="postgresql://u:pg-password@h/db")
    assert "pg-password" not in repr(settings)

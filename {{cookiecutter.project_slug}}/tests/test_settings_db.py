"""DATABASE_URL: providers' URLs and libpq options become what asyncpg takes, or are
refused at startup by name; placeholder passwords are refused outside local/test."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from {{ cookiecutter.package_name }}.database_url import split_database_url
from {{ cookiecutter.package_name }}.db import create_engine
from {{ cookiecutter.package_name }}.settings import Settings, describe


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
    assert settings.database_sqlalchemy_url == "postgresql+asyncpg://u:p@db.example.com:5432/app"


@pytest.mark.parametrize(
    ("query", "url_query", "server_settings"),
    [
        ("sslmode=require", "ssl=require", {}),
        ("channel_binding=prefer&gssencmode=disable", "", {}),
        ("target_session_attrs=read-write", "target_session_attrs=read-write", {}),
        ("application_name=billing", "", {"application_name": "billing"}),
        (
            "options=-c%20search_path%3Dbilling%20-c%20work_mem%3D64MB",
            "",
            {"search_path": "billing", "work_mem": "64MB"},
        ),
    ],
)
def test_libpq_options_are_mapped_for_asyncpg(
    query: str, url_query: str, server_settings: dict[str, str]
) -> None:
    settings = Settings(_env_file=None, database_url=f"postgres://u:p@db.example.com/app?{query}")
    base = "postgresql+asyncpg://u:p@db.example.com/app"
    expected = f"{base}?{url_query}" if url_query else base
    assert settings.database_sqlalchemy_url == expected
    assert settings.database_server_settings == server_settings


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("connect_timeout=10", "connect_timeout"),
        ("sslrootcert=/certs/ca.pem", "PGSSLROOTCERT"),
        ("channel_binding=require", "channel_binding"),
        ("sslmode=sometimes", "sslmode"),
        ("options=--no-such-flag", "options"),
        ("tcp_user_timeout=5", "tcp_user_timeout"),
    ],
)
def test_options_asyncpg_cannot_honour_are_refused_by_name(query: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(_env_file=None, database_url=f"postgres://u:p@db.example.com/app?{query}")


def test_multi_host_and_unix_socket_urls_are_accepted() -> None:
    multi = Settings(_env_file=None, database_url="postgres://u:p@h1:5432,h2:5433/app")
    assert multi.database_sqlalchemy_url == (
        "postgresql+asyncpg://u:p@/app?host=h1%3A5432&host=h2%3A5433"
    )
    socket = Settings(_env_file=None, database_url="postgresql://u:p@/app?host=/cloudsql/x")
    assert socket.database_sqlalchemy_url == "postgresql+asyncpg://u:p@/app?host=%2Fcloudsql%2Fx"


@pytest.mark.parametrize(
    "given", ["mysql://u:p@h/db", "not a url", "postgresql://", "postgres://h:x/db"]
)
def test_a_malformed_database_url_is_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, database_url=given)


async def test_a_mapped_url_really_connects(settings: Settings) -> None:
    """The options the URL carries reach the server: startup validation is not a promise
    that fails later on every connection."""
    url = settings.database_url + (
        "?application_name=mapped&target_session_attrs=any&sslmode=disable"
        "&options=-c%20lock_timeout%3D1234"
    )
    engine = create_engine(settings.model_copy(update={"database_url": url}))
    try:
        async with engine.connect() as connection:
            name = (await connection.execute(text("SHOW application_name"))).scalar_one()
            timeout = (await connection.execute(text("SHOW lock_timeout"))).scalar_one()
    finally:
        await engine.dispose()
    assert (name, timeout) == ("mapped", "1234ms")


@pytest.mark.parametrize(("cache", "kept"), [(True, True), (False, False)])
async def test_the_statement_cache_can_be_turned_off_for_pgbouncer(
    settings: Settings, cache: bool, kept: bool
) -> None:
    """PgBouncer in transaction mode cannot keep a prepared statement for the client."""
    engine = create_engine(settings.model_copy(update={"database_statement_cache": cache}))
    try:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
            await connection.execute(text("SELECT 1"))
            prepared = await connection.execute(text("SELECT count(*) FROM pg_prepared_statements"))
            count = prepared.scalar_one()
    finally:
        await engine.dispose()
    assert (count > 0) is kept


def test_the_database_password_stays_out_of_the_repr() -> None:
    settings = Settings(_env_file=None, database_url="postgresql://u:pg-password@h/db")
    assert "pg-password" not in repr(settings)


@pytest.mark.parametrize("password", ["change-me", "app", "Change-Me"])
def test_outside_local_a_placeholder_database_password_is_refused(password: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(
            _env_file=None,
            environment="staging",
            database_url=f"postgresql://app:{password}@db/app",
            migration_database_url="",
        )
    assert describe(caught.value) == (
        "invalid configuration: DATABASE_URL has a placeholder password; "
        "set a random one when ENVIRONMENT=staging"
    )


def test_outside_local_a_real_database_password_is_accepted() -> None:
    settings = Settings(
        _env_file=None,
        environment="production",
        database_url="postgresql://app:Xk2v9@db/app",
        # Not the test session's (tests/plugins/db.py sets it in the environment).
        migration_database_url="",
    )
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://u:p@h/db",
            "must be a PostgreSQL URL: postgresql+asyncpg://user:password@host:5432/db",
        ),
        ("postgres://h:x/db", "is not a valid URL"),
        ("postgresql://u:p@/db", "has no host: postgresql+asyncpg://user:password@host:5432/db"),
        (
            "postgres://h/db?target_session_attrs=primary-ish",
            "target_session_attrs=primary-ish is not one of "
            "['any', 'prefer-standby', 'primary', 'read-only', 'read-write', 'standby']",
        ),
        (
            "postgres://h/db?ssl=sometimes",
            "ssl=sometimes is not one of "
            "['allow', 'disable', 'prefer', 'require', 'verify-ca', 'verify-full']",
        ),
        # A blank value is kept, and so refused rather than silently dropped.
        (
            "postgres://h/db?sslmode=",
            "sslmode= is not one of "
            "['allow', 'disable', 'prefer', 'require', 'verify-ca', 'verify-full']",
        ),
        ("postgres://h/db?gssencmode=require", "gssencmode=require is not supported by asyncpg"),
        (
            "postgres://h/db?passfile=/x",
            "passfile is not supported in the URL: put the password into the URL "
            "(from a secret) instead",
        ),
        ("postgres://h/db?tcp_user_timeout=5", "unknown connection option 'tcp_user_timeout'"),
        (
            "postgres://h/db?options=-c%3Dx",
            "options='-c=x': only '-c name=value' settings are supported",
        ),
        (
            "postgres://h/db?options=work_mem%3D1",
            "options='work_mem=1': only '-c name=value' settings are supported",
        ),
    ],
)
def test_a_refused_database_url_says_why(url: str, message: str) -> None:
    """The message is what the one-line startup error shows: it must name the fix."""
    with pytest.raises(ValueError) as raised:
        split_database_url(url)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("url", "mapped", "server_settings"),
    [
        # "://" again in a value does not move the scheme.
        (
            "postgresql://u:p@h/db?application_name=a://b",
            "postgresql+asyncpg://u:p@h/db",
            {"application_name": "a://b"},
        ),
        (
            "postgres://h/db?application_name=",
            "postgresql+asyncpg://h/db",
            {"application_name": ""},
        ),
        ("postgres://h/db?ssl=require", "postgresql+asyncpg://h/db?ssl=require", {}),
        # Settings from both options are kept, in either order.
        (
            "postgres://h/db?application_name=a&options=-c%20x%3D1",
            "postgresql+asyncpg://h/db",
            {"application_name": "a", "x": "1"},
        ),
        ("postgres://h/db?options=-c%20x%3Da%3Db", "postgresql+asyncpg://h/db", {"x": "a=b"}),
        # Several hosts without user info, and with an unencoded @ in the password: the
        # last @ ends the user info, as urlsplit reads it.
        ("postgres://h1,h2:5433/db", "postgresql+asyncpg:///db?host=h1&host=h2%3A5433", {}),
        ("postgres://h1,h2/a:b", "postgresql+asyncpg:///a:b?host=h1&host=h2", {}),
        ("postgres://u:p@ss@h1,h2/db", "postgresql+asyncpg://u:p@ss@/db?host=h1&host=h2", {}),
    ],
)
def test_edge_cases_of_a_database_url_are_mapped(
    url: str, mapped: str, server_settings: dict[str, str]
) -> None:
    assert split_database_url(url) == (mapped, server_settings)

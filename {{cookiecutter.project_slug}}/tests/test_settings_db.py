"""DATABASE_URL: a libpq URL that asyncpg parses itself; what asyncpg would mishandle is
refused at startup by name; placeholder passwords are refused outside local/test."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from {{ cookiecutter.package_name }}.database_url import asyncpg_dsn
from {{ cookiecutter.package_name }}.db import create_engine, engine_url
from {{ cookiecutter.package_name }}.settings import Settings, describe


@pytest.mark.parametrize(
    "given",
    [
        "postgres://u:p@db.example.com:5432/app",
        "postgresql://u:p@db.example.com:5432/app",
        "postgresql+asyncpg://u:p@db.example.com:5432/app",
    ],
)
def test_provider_database_urls_become_an_asyncpg_dsn(given: str) -> None:
    settings = Settings(_env_file=None, database_url=given)
    assert settings.database_dsn == "postgresql://u:p@db.example.com:5432/app"


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("sslmode=require", "sslmode=require"),
        ("channel_binding=prefer&gssencmode=disable&sslmode=require", "sslmode=require"),
        ("target_session_attrs=read-write", "target_session_attrs=read-write"),
        ("application_name=billing", "application_name=billing"),
        ("service=billing", "service=billing"),
        (
            "options=-c%20search_path%3Dbilling%20-c%20work_mem%3D64MB",
            "options=-c%20search_path%3Dbilling%20-c%20work_mem%3D64MB",
        ),
    ],
)
def test_libpq_options_reach_asyncpg(query: str, kept: str) -> None:
    settings = Settings(_env_file=None, database_url=f"postgres://u:p@db.example.com/app?{query}")
    base = "postgresql://u:p@db.example.com/app"
    assert settings.database_dsn == (f"{base}?{kept}" if kept else base)


def test_certificate_and_password_files_named_in_the_url_are_accepted(tmp_path: Path) -> None:
    """Managed databases ask for sslmode=verify-full with their CA's certificate."""
    for name in ("ca.pem", "client.pem", "client.key", "crl.pem", "pgpass"):
        (tmp_path / name).write_text("")
    query = (
        f"sslmode=verify-full&sslrootcert={tmp_path}/ca.pem&sslcert={tmp_path}/client.pem"
        f"&sslkey={tmp_path}/client.key&sslcrl={tmp_path}/crl.pem&passfile={tmp_path}/pgpass"
    )
    settings = Settings(_env_file=None, database_url=f"postgres://u@db.example.com/app?{query}")
    assert settings.database_dsn.endswith(f"passfile={quote(str(tmp_path), safe='')}%2Fpgpass")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("connect_timeout=10", "DATABASE_POOL_TIMEOUT_SECONDS"),
        ("sslrootcert=/no/such/ca.pem", "sslrootcert=/no/such/ca.pem: no such file"),
        ("sslrootcert=system", "name the CA bundle's file"),
        ("channel_binding=require", "channel_binding"),
        ("sslmode=sometimes", "sslmode"),
        ("options=--no-such-flag", "options"),
        ("tcp_user_timeout=5", "tcp_user_timeout"),
    ],
)
def test_options_asyncpg_would_mishandle_are_refused_by_name(query: str, named: str) -> None:
    with pytest.raises(ValidationError, match=named):
        Settings(_env_file=None, database_url=f"postgres://u:p@db.example.com/app?{query}")


def test_a_bad_migration_url_is_refused_and_an_empty_one_means_database_url() -> None:
    with pytest.raises(ValidationError, match="migration_database_url"):
        Settings(_env_file=None, migration_database_url="mysql://u:p@h/db")
    settings = Settings(
        _env_file=None, database_url="postgres://u:p@h/app", migration_database_url=""
    )
    assert settings.migration_dsn == "postgresql://u:p@h/app"
    with pytest.raises(ValidationError, match="database_url"):
        Settings(_env_file=None, database_url="")


def test_multi_host_and_unix_socket_urls_are_accepted() -> None:
    multi = Settings(_env_file=None, database_url="postgres://u:p@h1:5432,h2:5433/app")
    assert multi.database_dsn == "postgresql://u:p@h1:5432,h2:5433/app"
    socket = Settings(_env_file=None, database_url="postgresql://u:p@/app?host=/cloudsql/x")
    assert socket.database_dsn == "postgresql://u:p@/app?host=%2Fcloudsql%2Fx"


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


async def test_a_password_file_named_in_the_url_is_read_by_asyncpg(
    settings: Settings, tmp_path: Path
) -> None:
    """asyncpg parses the URL itself: libpq's passfile works, which no mapping of the
    URL into SQLAlchemy's form could carry."""
    url = urlsplit(settings.database_dsn)
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:{url.username}:{url.password}\n")
    passfile.chmod(0o600)
    netloc = f"{url.username}@{url.netloc.rpartition('@')[2]}"
    without_password = url._replace(netloc=netloc, query=f"passfile={passfile}").geturl()
    engine = create_engine(settings.model_copy(update={"database_url": without_password}))
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


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
        ("mysql://u:p@h/db", "must be a PostgreSQL URL: postgresql://user:password@host:5432/db"),
        ("postgres://h:x/db", "is not a valid URL"),
        ("postgres://h1,h2:x/db", "is not a valid URL"),
        ("postgresql://u:p@/db", "has no host: postgresql://user:password@host:5432/db"),
        (
            "postgres://h/db?target_session_attrs=primary-ish",
            "target_session_attrs=primary-ish is not one of "
            "['any', 'prefer-standby', 'primary', 'read-only', 'read-write', 'standby']",
        ),
        # A blank value is kept, and so refused rather than silently dropped.
        (
            "postgres://h/db?sslmode=",
            "sslmode= is not one of "
            "['allow', 'disable', 'prefer', 'require', 'verify-ca', 'verify-full']",
        ),
        ("postgres://h/db?gssencmode=require", "gssencmode=require is not supported by asyncpg"),
        (
            "postgres://h/db?connect_timeout=5",
            "connect_timeout is not supported in the URL: "
            "set DATABASE_POOL_TIMEOUT_SECONDS instead",
        ),
        ("postgres://h/db?passfile=/no/such", "passfile=/no/such: no such file"),
        (
            "postgres://h/db?tcp_user_timeout=5",
            "unknown connection option 'tcp_user_timeout': asyncpg would send it to the server "
            "as a setting, and every connection would fail",
        ),
        (
            "postgres://h/db?options=-c%3Dx",
            "options='-c=x': only '-c name=value' settings are supported",
        ),
        (
            "postgres://h/db?options=-c%3Da%3Db",
            "options='-c=a=b': only '-c name=value' settings are supported",
        ),
        (
            "postgres://h/db?sslrootcert=system",
            "sslrootcert=system is not supported by asyncpg: name the CA bundle's file, "
            "e.g. sslrootcert=/etc/ssl/certs/ca-certificates.crt",
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
        asyncpg_dsn(url)
    assert str(raised.value) == message


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        # "://" again in a value does not move the scheme.
        (
            "postgresql+asyncpg://u:p@h/db?application_name=a://b",
            "postgresql://u:p@h/db?application_name=a%3A%2F%2Fb",
        ),
        ("postgres://h/db?application_name=", "postgresql://h/db?application_name="),
        # A service file may name the host.
        ("postgres:///db?service=billing", "postgresql:///db?service=billing"),
        ("postgres://[::1]:5433/db", "postgresql://[::1]:5433/db"),
        # An unencoded @ in the password: the last @ ends the user info, as libpq reads it.
        ("postgres://u:p@ss@h1,h2/db", "postgresql://u:p@ss@h1,h2/db"),
    ],
)
def test_edge_cases_of_a_database_url(url: str, dsn: str) -> None:
    assert asyncpg_dsn(url) == dsn


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:s%40cret@db:6432/billing?sslmode=require", "app@db:6432/billing"),
        ("postgresql://db/billing", "db/billing"),
        ("postgresql://u:p@h1,h2:5433/db", ""),
        ("postgresql://u:p@/db?host=/cloudsql/x", ""),
        ("postgresql://u:p@h/db?dbname=other", ""),
    ],
)
def test_the_engine_url_names_the_database_never_the_password(dsn: str, shown: str) -> None:
    """What SQLAlchemy shows (its repr, the spans' server address and database name)."""
    url = engine_url(dsn)
    assert url.render_as_string(hide_password=False) == f"postgresql+asyncpg://{shown}"

"""Fixtures: the app with its lifespan{% if cookiecutter.use_postgres or cookiecutter.use_redis %}, against REAL backing services{% endif %}.
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

The tests talk to the services named by
{%- if cookiecutter.use_postgres %} DATABASE_URL{% endif %}
{%- if cookiecutter.use_postgres and cookiecutter.use_redis %} and{% endif %}
{%- if cookiecutter.use_redis %} REDIS_URL{% endif %}
(environment or .env), never to fakes. Start them with:
``docker compose up -d --wait{% if cookiecutter.use_postgres %} db{% endif %}{% if cookiecutter.use_redis %} redis{% endif %}``.
{%- endif %}
{%- if cookiecutter.use_postgres %}
The database tests run in a separate ``<name>_test`` database, created and
migrated at the start of the session and dropped at its end.
{%- endif %}
{%- if cookiecutter.use_redis %}
Redis tests use logical database 15 and flush it after each test.
{%- endif %}
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
{% endif %}"""

from __future__ import annotations

{% if cookiecutter.use_postgres or cookiecutter.use_redis -%}
import asyncio
{% endif -%}
{% if cookiecutter.use_postgres -%}
import os
{% endif -%}
from collections.abc import AsyncIterator{% if cookiecutter.use_postgres %}, Iterator{% endif %}
{%- if cookiecutter.use_redis %}
from urllib.parse import urlsplit
{%- endif %}

import pytest
{%- if cookiecutter.use_postgres %}
from alembic import command
from alembic.config import Config
{%- endif %}
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
{%- if cookiecutter.use_redis %}
from redis.asyncio import Redis
{%- endif %}
{%- if cookiecutter.use_postgres %}
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
{%- endif %}

{% if cookiecutter.use_postgres -%}
from {{ cookiecutter.package_name }}.db import Base
{% endif -%}
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

START_HINT = "start them with: docker compose up -d --wait{% if cookiecutter.use_postgres %} db{% endif %}{% if cookiecutter.use_redis %} redis{% endif %}"


def unreachable(what: str, url: str, error: BaseException) -> None:
    """Stop the whole run with one line: every test below needs the service."""
    pytest.exit(f"{what} at {url} is unreachable ({type(error).__name__}); {START_HINT}", 1)
{%- endif %}
{%- if cookiecutter.use_postgres %}


async def _recreate_database(admin_url: str, name: str, *, create: bool) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A freshly created and migrated test database, dropped after the session."""
    configured = make_url(Settings().database_url)
    name = f"{configured.database}_test"
    admin_url = configured.set(database="postgres").render_as_string(hide_password=False)
    test_url = configured.set(database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(_recreate_database(admin_url, name, create=True))
    except (OSError, TimeoutError) as error:
        unreachable("PostgreSQL", configured.render_as_string(), error)
    previous = os.environ.get("DATABASE_URL")
    # migrations/env.py reads the URL from the settings, i.e. the environment.
    os.environ["DATABASE_URL"] = test_url
    try:
        command.upgrade(Config("alembic.ini"), "head")
        yield test_url
    finally:
        if previous is None:
            del os.environ["DATABASE_URL"]
        else:
            os.environ["DATABASE_URL"] = previous
        asyncio.run(_recreate_database(admin_url, name, create=False))
{%- endif %}
{%- if cookiecutter.use_redis %}


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The configured Redis, on logical database 15 so tests never flush dev data."""
    url = urlsplit(Settings().redis_url)._replace(path="/15").geturl()

    async def ping() -> None:
        client = Redis.from_url(url, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (OSError, TimeoutError) as error:
        parts = urlsplit(url)
        # Named without its password: this line ends up in CI logs.
        unreachable("Redis", f"{parts.hostname}:{parts.port or 6379}", error)
    return url
{%- endif %}


@pytest.fixture
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
def settings(
{%- if cookiecutter.use_postgres %}
    database_url: str,
{%- endif %}
{%- if cookiecutter.use_redis %}
    redis_url: str,
{%- endif %}
) -> Settings:
{%- else %}
def settings() -> Settings:
{%- endif %}
    return Settings(
        _env_file=None,
        environment="test",
{%- if cookiecutter.use_postgres %}
        database_url=database_url,
{%- endif %}
{%- if cookiecutter.use_redis %}
        redis_url=redis_url,
{%- endif %}
    )


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    """An HTTP client for the app, with its lifespan (pools) running."""
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
{%- if cookiecutter.use_postgres %}
        # Each test starts from empty tables.
        tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        if tables:
            async with app.state.engine.begin() as connection:
                await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
{%- endif %}
{%- if cookiecutter.use_redis %}
        await app.state.redis.flushdb()
{%- endif %}

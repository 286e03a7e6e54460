"""PostgreSQL for the tests: a separate ``<name>_test`` database, migrated to head.

The database named by DATABASE_URL (environment or .env) is left alone: the
session creates ``<name>_test`` next to it, migrates it with Alembic, and drops
it at the end. Each test starts from empty tables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Iterator, Mapping

import pytest
from alembic import command
from alembic.config import Config
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from {{ cookiecutter.package_name }}.db import Base
from {{ cookiecutter.package_name }}.settings import Settings

from . import unreachable


async def _recreate_database(admin_url: str, name: str, *, create: bool) -> None:
    engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            if create:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()


async def _empty_tables(engine: AsyncEngine) -> None:
    tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    if tables:
        async with engine.begin() as connection:
            await connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A freshly created and migrated test database, dropped after the session."""
    configured = make_url(Settings().database_dsn).set(drivername="postgresql+asyncpg")
    name = f"{configured.database}_test"
    admin_url = configured.set(database="postgres").render_as_string(hide_password=False)
    test_url = configured.set(database=name).render_as_string(hide_password=False)
    try:
        asyncio.run(_recreate_database(admin_url, name, create=True))
    except (OSError, TimeoutError) as error:
        unreachable(request.config, "PostgreSQL", configured.render_as_string(), error)
    # migrations/env.py reads the URL from the settings, i.e. the environment; a
    # MIGRATION_DATABASE_URL in .env would otherwise migrate the development database.
    names = ("DATABASE_URL", "MIGRATION_DATABASE_URL")
    previous = {variable: os.environ.get(variable) for variable in names}
    os.environ.update(dict.fromkeys(names, test_url))
    try:
        command.upgrade(Config("alembic.ini"), "head")
        yield test_url
    finally:
        for variable, value in previous.items():
            if value is None:
                del os.environ[variable]
            else:
                os.environ[variable] = value
        asyncio.run(_recreate_database(admin_url, name, create=False))


@pytest.fixture
def scratch_url(database_url: str) -> Iterator[str]:
    """An empty database of its own next to the test database, for a migration run."""
    url = make_url(database_url)
    name = f"{url.database}_scratch"
    admin_url = url.set(database="postgres").render_as_string(hide_password=False)
    asyncio.run(_recreate_database(admin_url, name, create=True))
    yield url.set(database=name).render_as_string(hide_password=False)
    asyncio.run(_recreate_database(admin_url, name, create=False))


def pytest_app_settings(request: pytest.FixtureRequest) -> Mapping[str, object]:
    return {"database_url": request.getfixturevalue("database_url")}


def pytest_app_reset(app: FastAPI) -> Awaitable[None]:
    return _empty_tables(app.state.engine)


def pytest_compose_services() -> list[str]:
    return ["db"]

"""Migrations: the test database is at head, and the models match the revisions.

It came with the example API, whose revision is the first; once the service has
revisions of its own, keep it when you remove the example.
"""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine


async def test_the_test_database_is_migrated_to_head(app: FastAPI, client: AsyncClient) -> None:
    heads = set(ScriptDirectory.from_config(Config("alembic.ini")).get_heads())
    async with app.state.engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        current = set(result.scalars())
    assert heads
    assert current == heads


@pytest.mark.services  # the migrated test database, without the app
def test_models_and_migrations_do_not_drift(database_url: str) -> None:
    # `alembic check` fails when autogenerate would write a new revision: a model was
    # changed without a migration, or a migration without the model.
    command.check(Config("alembic.ini"))


async def _sql(url: str, *statements: str) -> list[tuple[object, ...]]:
    """Run statements in one transaction; the last one's rows."""
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        await engine.dispose()


COLUMN = (
    "SELECT data_type, is_identity FROM information_schema.columns"
    " WHERE table_name = 'items' AND column_name = 'id'"
)


@pytest.mark.services  # the migrated test database, without the app
def test_0002_makes_a_serial_key_an_identity_and_keeps_the_ids(database_url: str) -> None:
    config = Config("alembic.ini")
    command.downgrade(config, "base")
    try:
        # A database migrated by 0001 alone (services made from the template's 0.1.0):
        # ids 1..3 handed out, the last one deleted, so it must not be handed out again.
        command.upgrade(config, "0001")
        assert asyncio.run(_sql(database_url, COLUMN)) == [("integer", "NO")]
        insert = "INSERT INTO items (name) VALUES ('a'), ('b'), ('c')"
        asyncio.run(_sql(database_url, insert, "DELETE FROM items WHERE id = 3"))
        command.upgrade(config, "head")
        assert asyncio.run(_sql(database_url, COLUMN)) == [("bigint", "YES")]
        add_d = "INSERT INTO items (name) VALUES ('d')"
        rows = asyncio.run(_sql(database_url, add_d, "SELECT id, name FROM items ORDER BY id"))
        assert rows == [(1, "a"), (2, "b"), (4, "d")]
        # Down again: a serial that goes on from there.
        command.downgrade(config, "0001")
        assert asyncio.run(_sql(database_url, COLUMN)) == [("integer", "NO")]
        add_e = "INSERT INTO items (name) VALUES ('e') RETURNING id"
        assert asyncio.run(_sql(database_url, add_e)) == [(5,)]
    finally:
        command.upgrade(config, "head")
        asyncio.run(_sql(database_url, "TRUNCATE items RESTART IDENTITY"))


@pytest.mark.services  # the migrated test database, without the app
def test_0002_leaves_an_identity_made_by_0001_alone(database_url: str) -> None:
    # The template's 0.2.0 shipped a 0001 that made the identity itself: such a
    # database is at 0001 with the schema of head. 0002 must change nothing there.
    config = Config("alembic.ini")
    asyncio.run(_sql(database_url, "INSERT INTO items (name) VALUES ('a'), ('b')"))
    command.stamp(config, "0001")
    try:
        command.upgrade(config, "0002")
        assert asyncio.run(_sql(database_url, COLUMN)) == [("bigint", "YES")]
        add = "INSERT INTO items (name) VALUES ('c') RETURNING id"
        assert asyncio.run(_sql(database_url, add)) == [(3,)]
    finally:
        # The schema is head's throughout (later revisions' columns included): only the
        # recorded revision moved.
        command.stamp(config, "head")
        asyncio.run(_sql(database_url, "TRUNCATE items RESTART IDENTITY"))

"""Migrations: the test database is at head, and the models match the revisions.

It came with the example API, whose revision is the first; once the service has
revisions of its own, keep it when you remove the example.
"""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text


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

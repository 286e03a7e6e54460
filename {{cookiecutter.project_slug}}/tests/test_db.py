from __future__ import annotations

import pytest
{%- if cookiecutter.include_example_api %}
from alembic.config import Config
from alembic.script import ScriptDirectory
{%- endif %}
from fastapi import FastAPI, Request
from httpx import AsyncClient
from sqlalchemy import text

from {{ cookiecutter.package_name }}.db import get_session


async def test_get_session_rolls_back_when_the_handler_raises(
    app: FastAPI, client: AsyncClient
) -> None:
    sessions = get_session(Request({"type": "http", "app": app}))
    session = await anext(sessions)
    # DDL is transactional in PostgreSQL: the table exists only if committed.
    await session.execute(text("CREATE TABLE rollback_probe (n int)"))
    with pytest.raises(RuntimeError):
        await sessions.athrow(RuntimeError("the handler failed"))
    async with app.state.engine.connect() as connection:
        found = await connection.execute(text("SELECT to_regclass('rollback_probe')"))
        assert found.scalar_one() is None
{%- if cookiecutter.include_example_api %}


async def test_the_test_database_is_migrated_to_head(app: FastAPI, client: AsyncClient) -> None:
    heads = set(ScriptDirectory.from_config(Config("alembic.ini")).get_heads())
    async with app.state.engine.connect() as connection:
        result = await connection.execute(text("SELECT version_num FROM alembic_version"))
        current = set(result.scalars())
    assert heads
    assert current == heads
{%- endif %}

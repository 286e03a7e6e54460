"""The dependency check of the database: a connection of its own, which requests cannot take."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import State

from {{ cookiecutter.package_name }} import db, health
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .test_health import assert_down_naming


async def test_dependencies_check_the_database(client: AsyncClient) -> None:
    response = await client.get("/health/dependencies")
    assert response.json()["checks"]["database"]["status"] == "ok"


async def test_an_unreachable_database_is_named_and_the_pod_stays_ready(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so the check fails fast.
    broken = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://app:app@127.0.0.1:1/app"}
    )
    await assert_down_naming(broken, "database")


async def test_a_saturated_request_pool_is_busy_not_down(app: FastAPI, client: AsyncClient) -> None:
    engine = app.state.engine
    held = [await engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        response = await client.get("/health/dependencies")
    finally:
        for connection in held:
            await connection.close()
    assert response.status_code == 200, response.text


async def test_shutdown_cancels_the_dependency_check_before_it_closes_the_pools(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    create_engine = db.create_engine
    cancel_dependency_check = health.cancel_dependency_check

    def recorded_engine(*args: Any, **kwargs: Any) -> AsyncEngine:
        engine = create_engine(*args, **kwargs)
        event.listen(engine.sync_engine, "engine_disposed", lambda _: events.append("dispose"))
        return engine

    async def recorded_cancel(state: State) -> None:
        events.append("cancel")
        await cancel_dependency_check(state)

    monkeypatch.setattr(db, "create_engine", recorded_engine)
    monkeypatch.setattr(health, "cancel_dependency_check", recorded_cancel)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    # The request pool and the check's pool, each closed after the check is gone.
    assert events == ["cancel", "dispose", "dispose"]

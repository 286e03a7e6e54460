"""Readiness and the database: a probe of its own, on a connection requests cannot take."""

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

from .test_health import assert_unready_naming


async def test_ready_checks_the_database(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.json()["checks"]["database"]["status"] == "ok"


async def test_ready_is_503_naming_an_unreachable_database(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so the check fails fast.
    broken = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://app:app@127.0.0.1:1/app"}
    )
    await assert_unready_naming(broken, "database")


async def test_a_saturated_request_pool_is_busy_not_unready(
    app: FastAPI, client: AsyncClient
) -> None:
    engine = app.state.engine
    held = [await engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        response = await client.get("/health/ready")
    finally:
        for connection in held:
            await connection.close()
    assert response.status_code == 200, response.text


async def test_shutdown_cancels_the_readiness_check_before_it_closes_the_pools(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    create_engine = db.create_engine
    cancel_readiness_check = health.cancel_readiness_check

    def recorded_engine(*args: Any, **kwargs: Any) -> AsyncEngine:
        engine = create_engine(*args, **kwargs)
        event.listen(engine.sync_engine, "engine_disposed", lambda _: events.append("dispose"))
        return engine

    async def recorded_cancel(state: State) -> None:
        events.append("cancel")
        await cancel_readiness_check(state)

    monkeypatch.setattr(db, "create_engine", recorded_engine)
    monkeypatch.setattr(health, "cancel_readiness_check", recorded_cancel)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    # The request pool and the readiness pool, each closed after the check is gone.
    assert events == ["cancel", "dispose", "dispose"]

"""/metrics and the database: the request pool's gauges (metrics_db.observe_pool)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

from {{ cookiecutter.package_name }}.db import SessionDep
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .test_db import database_down, terminate_app_connections
from .test_metrics import scrape


async def in_use(client: AsyncClient) -> float:
    return (await scrape(client))[("db_pool_connections_in_use", ())]


async def test_the_request_pool_is_observed(client: AsyncClient) -> None:
    names = {name for name, _ in await scrape(client)}
    assert {"db_pool_connections_in_use", "db_pool_overflow"} <= names


async def test_connections_in_use_stay_true_through_an_outage(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    engine: AsyncEngine = app.state.engine
    held = [await engine.connect() for _ in range(3)]
    for connection in held:
        await connection.execute(text("SELECT 1"))
    assert await in_use(client) == 3
    await held[0].close()
    assert await in_use(client) == 2
    for connection in held[1:]:
        await connection.close()
    assert await in_use(client) == 0
    # The server restarts (the pooled connections die) and stays down a while:
    # each checkout finds a dead connection, and its reconnect fails.
    await terminate_app_connections(settings)

    def refuse(*_: object) -> None:
        raise ConnectionRefusedError("the server is down")

    event.listen(engine.sync_engine, "do_connect", refuse)
    try:
        for _ in range(3):
            with pytest.raises((ConnectionRefusedError, DBAPIError)):
                async with engine.connect() as connection:
                    await connection.execute(text("SELECT 1"))
    finally:
        event.remove(engine.sync_engine, "do_connect", refuse)
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert pool.checkedout() == 0
    assert await in_use(client) == 0


async def test_requests_that_meet_a_database_outage_are_counted_by_dependency(
    settings: Settings,
) -> None:
    # Readiness ignores the database (health.py): this counter is the signal to alert on.
    app = create_app(database_down(settings, host="127.0.0.1", port="1"))

    @app.get("/reads")
    async def reads(session: SessionDep) -> None:
        await session.execute(text("SELECT 1"))

    key = ("dependency_failures_total", (("dependency", "database"),))
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            before = (await scrape(http)).get(key, 0.0)
            statuses = [(await http.get("/reads")).status_code for _ in range(3)]
            after = (await scrape(http)).get(key, 0.0)
    assert statuses == [503] * 3
    assert after - before == 3

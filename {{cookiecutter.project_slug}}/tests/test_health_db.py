"""Readiness and the database: a probe of its own, on a connection requests cannot take."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient

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

"""The example job on real Redis and PostgreSQL: POST /items enqueues it once the item is
committed, the worker fills processed_at, once; Redis down makes the route a 503."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.jobs import enqueue_unprocessed, mark_processed
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import QUEUE, create_broker
from tests.plugins.worker import eventually

pytestmark = pytest.mark.services


async def test_creating_an_item_gets_it_processed(
    client: AsyncClient, worker: RedisStreamBroker
) -> None:
    created = await client.post("/api/items", json={"name": "widget"})
    assert created.status_code == 201
    assert created.json()["processed_at"] is None  # the job runs after the answer
    item: dict[str, Any] = {}

    async def processed() -> bool:
        item.update((await client.get(f"/api/items/{created.json()['id']}")).json())
        return item["processed_at"] is not None

    await eventually(processed)
    assert item["processed_at"] >= item["created_at"]


async def test_the_job_is_idempotent(client: AsyncClient, app: FastAPI) -> None:
    created = (await client.post("/api/items", json={"name": "widget"})).json()
    engine: AsyncEngine = app.state.engine
    assert await mark_processed(engine, created["id"]) is True
    first = (await client.get(f"/api/items/{created['id']}")).json()["processed_at"]
    assert await mark_processed(engine, created["id"]) is False
    assert (await client.get(f"/api/items/{created['id']}")).json()["processed_at"] == first


async def test_a_deleted_item_needs_no_processing(client: AsyncClient, app: FastAPI) -> None:
    created = (await client.post("/api/items", json={"name": "widget"})).json()
    await client.delete(f"/api/items/{created['id']}")
    assert await mark_processed(app.state.engine, created["id"]) is False


async def test_a_failed_enqueue_is_a_503_problem(client: AsyncClient, settings: Settings) -> None:
    # `client` resets the database afterwards, and carries the token when the service
    # authenticates callers. Only the queue is down (a broker on a closed port): whatever
    # else the app does with Redis still works, so the 503 is the enqueue's.
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        down = settings.model_copy(
            update={"redis_url": "redis://127.0.0.1:1/15", "redis_timeout_seconds": 1.0}
        )
        app.state.broker = create_broker(down)
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        try:
            async with AsyncClient(
                transport=transport, base_url="http://test", headers=client.headers
            ) as http:
                response = await http.post("/api/items", json={"name": "widget"})
        finally:
            await app.state.broker.shutdown()
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"]
    assert response.json()["status"] == 503


async def test_the_sweep_enqueues_only_items_left_unprocessed(
    client: AsyncClient, app: FastAPI
) -> None:
    """The periodic sweep (its once-per-tick run: test_worker_periodic.py)."""
    engine: AsyncEngine = app.state.engine
    stale, done = [(await client.post("/api/items", json={"name": n})).json() for n in "ab"]
    await mark_processed(engine, done["id"])
    # Just created: its own job may still be queued, so the default age leaves it alone.
    assert await enqueue_unprocessed(engine, app.state.broker) == []
    assert await enqueue_unprocessed(engine, app.state.broker, timedelta(0)) == [stale["id"]]
    async with Redis(connection_pool=app.state.broker.connection_pool) as redis:
        assert await redis.xlen(QUEUE) == 3  # the two creations' jobs, and the sweep's

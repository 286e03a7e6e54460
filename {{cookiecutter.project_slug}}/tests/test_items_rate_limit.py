"""The example API's policies: writes fail closed without Redis, reads stay open."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from limits import WindowStats
from redis.exceptions import ConnectionError as RedisConnectionError


@pytest.fixture
def redis_down(app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def hit(*_args: Any, **_kwargs: Any) -> tuple[bool, WindowStats]:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(app.state.rate_limiter, "hit", hit)


async def test_each_write_has_its_own_count(client: AsyncClient) -> None:
    created = await client.post("/api/items", json={"name": "counted"})
    assert created.headers["RateLimit-Policy"].startswith('"create_item";')
    listed = await client.get("/api/items")
    assert listed.headers["RateLimit-Policy"].startswith('"default";')


@pytest.mark.usefixtures("redis_down")
async def test_without_redis_writes_answer_503_and_reads_200(client: AsyncClient) -> None:
    assert (await client.get("/api/items")).status_code == 200
    for answer in (
        await client.post("/api/items", json={"name": "unlimited"}),
        await client.put("/api/items/1", json={"name": "unlimited"}),
        await client.delete("/api/items/1"),
    ):
        assert answer.status_code == 503, answer.request.method
        assert "redis" in answer.json()["detail"]

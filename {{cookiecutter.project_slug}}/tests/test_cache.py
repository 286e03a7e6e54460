from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient


async def test_the_redis_pool_round_trips_a_value(app: FastAPI, client: AsyncClient) -> None:
    await app.state.redis.set("greeting", "hello", ex=60)
    assert await app.state.redis.get("greeting") == "hello"

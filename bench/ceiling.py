"""The ceiling: the same routes as the generated service with nothing in between.

Bare FastAPI, a raw asyncpg pool and a raw Redis client; no middleware, no ORM,
no access log. It runs in the generated service's own image, under the same
gunicorn + uvicorn-worker command and worker count, against the same database,
so the ratio of the two figures is what the service's own layers cost.

Mounted read-only into the container by bench/compose.bench.yaml; it imports
only packages the generated image already has.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import redis.asyncio as redis
from fastapi import FastAPI, HTTPException, Path, Query
from pydantic import BaseModel, Field

COLUMNS = "id, name, description, created_at"


class ItemIn(BaseModel):
    # The same validation as the service: the ceiling must not skip work the
    # service is required to do.
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    dsn = os.environ["DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://", 1)
    # As many connections per worker as the service's SQLAlchemy pool allows.
    size = int(os.environ.get("DATABASE_POOL_SIZE", "10"))
    overflow = int(os.environ.get("DATABASE_MAX_OVERFLOW", "0"))
    app.state.pool = await asyncpg.create_pool(dsn, min_size=size, max_size=size + overflow)
    # A bounded pool, like the database's: 32 concurrent probes per worker must
    # queue for a connection rather than open a new one each (a connection
    # storm that times out on a loaded machine). Timeouts as the service's.
    pool = redis.BlockingConnectionPool.from_url(
        os.environ["REDIS_URL"],
        max_connections=size + overflow,
        timeout=5,
        socket_connect_timeout=5,
        socket_timeout=5,
    )
    app.state.redis = redis.Redis(connection_pool=pool)
    try:
        yield
    finally:
        await app.state.redis.aclose(close_connection_pool=True)
        await app.state.pool.close()


app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/health/dependencies")
async def dependencies() -> dict[str, Any]:
    pool: asyncpg.Pool = app.state.pool
    await asyncio.gather(pool.fetchval("SELECT 1"), app.state.redis.ping())
    return {"status": "ok", "checks": {"database": {"status": "ok"}, "redis": {"status": "ok"}}}


@app.get("/api/items/{item_id}")
async def get_item(item_id: int = Path(ge=1, le=2**31 - 1)) -> dict[str, Any]:
    row = await app.state.pool.fetchrow(f"SELECT {COLUMNS} FROM items WHERE id = $1", item_id)
    if row is None:
        raise HTTPException(404, detail=f"item {item_id} not found")
    return dict(row)


@app.get("/api/items")
async def list_items(
    limit: int = Query(default=50, ge=1, le=500), offset: int = Query(default=0, ge=0)
) -> list[dict[str, Any]]:
    rows = await app.state.pool.fetch(
        f"SELECT {COLUMNS} FROM items ORDER BY id LIMIT $1 OFFSET $2", limit, offset
    )
    return [dict(row) for row in rows]


@app.post("/api/items", status_code=201)
async def create_item(payload: ItemIn) -> dict[str, Any]:
    row = await app.state.pool.fetchrow(
        f"INSERT INTO items (name, description) VALUES ($1, $2) RETURNING {COLUMNS}",
        payload.name,
        payload.description,
    )
    return dict(row)

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis

from {{ cookiecutter.package_name }}.cache import RedisDep, create_redis
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings


async def test_the_redis_pool_round_trips_a_value(app: FastAPI, client: AsyncClient) -> None:
    await app.state.redis.set("greeting", "hello", ex=60)
    assert await app.state.redis.get("greeting") == "hello"


async def test_a_connection_redis_closed_is_replaced_not_an_outage(settings: Settings) -> None:
    """After a Redis restart every pooled connection is closed: the next command on one
    must get a new connection, not fail (a 503 while Redis is back)."""
    redis = create_redis(settings)
    try:
        assert await redis.ping()
        pooled = await redis.client_id()  # the pool's one connection, reused below
        async with Redis.from_url(settings.redis_url) as admin:
            assert await admin.client_kill_filter(_id=str(pooled)) == 1
        assert await redis.ping()
        assert await redis.client_id() != pooled
    finally:
        await redis.aclose()


async def test_an_unreachable_redis_is_a_503(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))

    @app.get("/cached")
    async def cached(redis: RedisDep) -> None:
        await redis.get("anything")

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/cached")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


async def test_wrong_redis_credentials_are_a_503_logged_once_as_an_error(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    configured = urlsplit(settings.redis_url)
    # A user that exists on no server: AUTH fails with WRONGPASS whether or not
    # the default user has a password (CI's service Redis has none, since GitHub
    # service containers cannot be given a command such as --requirepass).
    wrong = configured._replace(
        netloc=f"no-such-user:wrong@{configured.hostname}:{configured.port or 6379}"
    )
    app = create_app(settings.model_copy(update={"redis_url": wrong.geturl()}))
    # create_app routes logging to stdout; keep pytest's capture listening too.
    logging.getLogger().addHandler(caplog.handler)

    @app.get("/cached")
    async def cached(redis: RedisDep) -> None:
        await redis.get("anything")

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            with caplog.at_level(logging.DEBUG):
                statuses = [(await http.get("/cached")).status_code for _ in range(3)]
    assert statuses == [503] * 3
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1

"""Redis for the tests: logical database 15 of the configured server, flushed after each test.

Database 15 keeps the tests away from development data on database 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from {{ cookiecutter.package_name }}.settings import Settings

from . import unreachable


async def _flush(client: Redis) -> None:
    await client.flushdb()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The configured Redis, on logical database 15 so tests never flush dev data."""
    url = urlsplit(Settings().redis_url)._replace(path="/15").geturl()

    async def ping() -> None:
        client = Redis.from_url(url, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    # redis-py wraps a refused or timed-out connection in its own exceptions.
    except (OSError, TimeoutError, RedisConnectionError, RedisTimeoutError) as error:
        parts = urlsplit(url)
        # Named without its password: this line ends up in CI logs.
        unreachable(request.config, "Redis", f"{parts.hostname}:{parts.port or 6379}", error)
    return url


def pytest_app_settings(request: pytest.FixtureRequest) -> Mapping[str, object]:
    return {"redis_url": request.getfixturevalue("redis_url")}


def pytest_app_reset(app: FastAPI) -> Awaitable[None]:
    return _flush(app.state.redis)


def pytest_compose_services() -> list[str]:
    return ["redis"]

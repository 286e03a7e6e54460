"""/metrics and the rate limits: each limited route's requests by decision; /metrics exempt."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from limits import WindowStats
from redis.exceptions import ConnectionError as RedisConnectionError

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

from .test_metrics import scrape

ROUTE = "/test/counted"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings.model_copy(update={"rate_limit_default": "2/minute"}))
    app.add_api_route(ROUTE, lambda: {})
    return app


async def decisions(client: AsyncClient, decision: str) -> float:
    samples = await scrape(client)
    key = ("rate_limit_decisions_total", (("decision", decision), ("route", ROUTE)))
    return samples.get(key, 0.0)


async def test_allowed_and_limited_requests_are_counted_and_scrapes_are_exempt(
    client: AsyncClient,
) -> None:
    before = {d: await decisions(client, d) for d in ("allowed", "limited")}
    statuses = [(await client.get(ROUTE)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    # Six scrapes so far, over a limit of two: /metrics is never limited.
    assert await decisions(client, "allowed") == before["allowed"] + 2
    assert await decisions(client, "limited") == before["limited"] + 1


async def test_requests_passed_unchecked_without_redis_are_counted(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hit(*_args: Any, **_kwargs: Any) -> tuple[bool, WindowStats]:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(app.state.rate_limiter, "hit", hit)
    before = await decisions(client, "unchecked")
    assert (await client.get(ROUTE)).status_code == 200
    assert await decisions(client, "unchecked") == before + 1

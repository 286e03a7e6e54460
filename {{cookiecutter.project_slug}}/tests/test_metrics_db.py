"""/metrics and the database: the request pool's gauges (metrics_db.observe_pool)."""

from __future__ import annotations

from httpx import AsyncClient

from .test_metrics import scrape


async def test_the_request_pool_is_observed(client: AsyncClient) -> None:
    names = {name for name, _ in await scrape(client)}
    assert {"db_pool_connections_in_use", "db_pool_overflow"} <= names

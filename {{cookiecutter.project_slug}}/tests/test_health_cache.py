"""Readiness and Redis."""

from __future__ import annotations

from httpx import AsyncClient

from {{ cookiecutter.package_name }}.settings import Settings

from .test_health import assert_unready_naming


async def test_ready_checks_redis(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.json()["checks"]["redis"]["status"] == "ok"


async def test_ready_is_503_naming_an_unreachable_redis(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so the check fails fast.
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    await assert_unready_naming(broken, "redis")

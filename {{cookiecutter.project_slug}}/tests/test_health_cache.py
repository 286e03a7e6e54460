"""The dependency check of Redis."""

from __future__ import annotations

from httpx import AsyncClient

from {{ cookiecutter.package_name }}.settings import Settings

from .test_health import assert_down_naming


async def test_dependencies_check_redis(client: AsyncClient) -> None:
    response = await client.get("/health/dependencies")
    assert response.json()["checks"]["redis"]["status"] == "ok"


async def test_an_unreachable_redis_is_named_and_the_pod_stays_ready(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so the check fails fast.
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    await assert_down_naming(broken, "redis")

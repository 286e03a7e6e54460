"""Readiness and Redis."""

from __future__ import annotations

from httpx import AsyncClient

from {{ cookiecutter.package_name }}.settings import Settings

from .test_health import ready_and_live


async def test_ready_checks_redis(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.json()["checks"]["redis"]["status"] == "ok"


async def test_ready_is_503_naming_an_unreachable_redis(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so the check fails fast.
    broken = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    ready, live = await ready_and_live(broken)
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "error"
    # Anonymous probes learn that a check failed, not which driver raised what.
    assert body["checks"]["redis"] == {"status": "error", "detail": "unreachable"}
    assert live.status_code == 200

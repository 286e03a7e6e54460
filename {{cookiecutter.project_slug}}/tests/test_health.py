"""/health/live, /health/ready and /health/dependencies, whatever clients the service opens."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from starlette.datastructures import State

from {{ cookiecutter.package_name }} import health
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings


async def health_of(settings: Settings) -> dict[str, Response]:
    """Each health endpoint of an app of its own, with its lifespan."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            return {
                path: await http.get(f"/health/{path}")
                for path in ("live", "ready", "dependencies")
            }


async def assert_down_naming(broken: Settings, check: str) -> None:
    """A dependency down: /health/dependencies is a 503 naming only its check, while
    the orchestrator's probes stay 200 (no restart, no pod out of the Service)."""
    health_now = await health_of(broken)
    assert health_now["live"].status_code == 200
    assert health_now["ready"].status_code == 200
    dependencies = health_now["dependencies"]
    assert dependencies.status_code == 503
    body = dependencies.json()
    assert body["status"] == "error"
    # Anonymous callers learn that a check failed, not which driver raised what.
    assert body["checks"][check] == {"status": "error", "detail": "unreachable"}
    failing = {name for name, result in body["checks"].items() if result["status"] != "ok"}
    assert failing == {check}


async def test_every_health_endpoint_answers_head(client: AsyncClient) -> None:
    # HEAD is what some load balancers and uptime checkers send.
    for path in ("/health/live", "/health/ready", "/health/dependencies"):
        response = await client.head(path)
        assert response.status_code == 200, path


async def test_live_and_ready_touch_no_dependency(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def must_not_run(state: State) -> health.Dependencies:
        raise AssertionError("an orchestrator probe checked the dependencies")

    monkeypatch.setattr(health, "check_dependencies", must_not_run)
    for path in ("/health/live", "/health/ready"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert response.json() == {"status": "ok"}


async def test_dependencies_reports_every_check_ok(app: FastAPI, client: AsyncClient) -> None:
    response = await client.get("/health/dependencies")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    # One check per client the lifespan opened; tests/test_health_<client>.py name them.
    assert set(body["checks"]) == set(app.state.dependency_probes)
    assert all(check["status"] == "ok" for check in body["checks"].values())


async def test_concurrent_dependency_checks_share_one_run(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    original = health.check_dependencies

    async def slow_check(state: State) -> health.Dependencies:
        runs.append(1)
        await asyncio.sleep(0.2)
        return await original(state)

    monkeypatch.setattr(health, "check_dependencies", slow_check)
    responses = await asyncio.gather(*(client.get("/health/dependencies") for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert len(runs) == 1, "a burst of requests costs the dependencies one check"


async def test_shutdown_waits_for_a_running_dependency_check(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def hanging_check(state: State) -> health.Dependencies:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    monkeypatch.setattr(health, "check_dependencies", hanging_check)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            probe = asyncio.create_task(http.get("/health/dependencies"))
            await started.wait()
            check = app.state.dependency_check
    assert check.done(), "the check outlived the lifespan (and the pools it uses)"
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await probe


async def test_a_check_reports_ok_timeout_or_unreachable_and_never_the_cause() -> None:
    async def fine() -> None:
        return None

    async def hangs() -> None:
        await asyncio.sleep(3600)

    async def fails() -> None:
        raise OSError("driver 1.2.3: connection refused by 10.0.0.7")

    assert (await health.run_check("x", fine, 1)).status == "ok"
    timed_out = await health.run_check("x", hangs, 0.01)
    assert (timed_out.status, timed_out.detail) == ("timeout", "no answer within 0.01s")
    failed = await health.run_check("x", fails, 1)
    assert (failed.status, failed.detail) == ("error", "unreachable")

"""/health/live and /health/ready, whatever clients the service opens."""

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


async def ready_and_live(settings: Settings) -> tuple[Response, Response]:
    """/health/ready and /health/live of an app of its own, with its lifespan."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/health/ready"), await http.get("/health/live")


async def assert_unready_naming(broken: Settings, check: str) -> None:
    """A dependency down: ready is a 503 naming its check, live stays 200."""
    ready, live = await ready_and_live(broken)
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "error"
    # Anonymous probes learn that a check failed, not which driver raised what.
    assert body["checks"][check] == {"status": "error", "detail": "unreachable"}
    assert live.status_code == 200


async def test_both_probes_answer_head(client: AsyncClient) -> None:
    # HEAD is what some load balancers and uptime checkers send.
    for path in ("/health/live", "/health/ready"):
        response = await client.head(path)
        assert response.status_code == 200, path


async def test_live_touches_no_dependency(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_every_check_ok(app: FastAPI, client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    # One check per client the lifespan opened; tests/test_health_<client>.py name them.
    assert set(body["checks"]) == set(app.state.readiness_probes)
    assert all(check["status"] == "ok" for check in body["checks"].values())


async def test_concurrent_readiness_probes_share_one_check(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[int] = []
    original = health.check_dependencies

    async def slow_check(state: State) -> health.Readiness:
        runs.append(1)
        await asyncio.sleep(0.2)
        return await original(state)

    monkeypatch.setattr(health, "check_dependencies", slow_check)
    responses = await asyncio.gather(*(client.get("/health/ready") for _ in range(10)))
    assert {r.status_code for r in responses} == {200}
    assert len(runs) == 1, "a burst of probes costs the dependencies one check"


async def test_shutdown_waits_for_a_running_readiness_check(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def hanging_check(state: State) -> health.Readiness:
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    monkeypatch.setattr(health, "check_dependencies", hanging_check)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            probe = asyncio.create_task(http.get("/health/ready"))
            await started.wait()
            check = app.state.readiness_check
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

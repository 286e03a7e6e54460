"""Liveness and readiness probes.

``/health/live`` touches nothing: it answers as long as the process can serve,
so an orchestrator restarts only a truly stuck process. ``/health/ready`` checks
every dependency concurrently, each bounded by a timeout, and answers 503 when
one fails so a load balancer stops sending traffic without a restart.

Readiness answers "can this instance reach its dependencies", not "is it idle": the
lifespan (main.py) registers one probe per client it opens, on a connection requests
cannot exhaust, so a worker whose request pool is saturated still reports ready.
Draining a node only because it is busy would move its load onto the others and take
them down one after another. A new dependency adds its probe there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel
from starlette.datastructures import State

logger = logging.getLogger(__name__)
PREFIX = "/health"
router = APIRouter(prefix=PREFIX, tags=["health"])

CheckStatus = Literal["ok", "error", "timeout"]
Probe = Callable[[], Awaitable[None]]


class CheckResult(BaseModel):
    status: CheckStatus
    detail: str | None = None


class Liveness(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok", "error"]
    checks: dict[str, CheckResult]


async def run_check(name: str, probe: Probe, seconds: float) -> CheckResult:
    try:
        async with asyncio.timeout(seconds):
            await probe()
    except TimeoutError:
        logger.warning("readiness check timed out", extra={"check": name})
        return CheckResult(status="timeout", detail=f"no answer within {seconds:g}s")
    except Exception as error:  # any failure of a dependency means "not ready"
        # The cause goes to the log only: the probe is anonymous, and exception names
        # tell a stranger which driver and version to look up.
        logger.warning("readiness check failed", extra={"check": name, "error": repr(error)})
        return CheckResult(status="error", detail="unreachable")
    return CheckResult(status="ok")


# Both probes answer HEAD too (load balancers and uptime checkers send it). FastAPI
# routes take no HEAD for a GET, and one route with both methods would be two
# operations with one id in the schema: so an undocumented route answers both
# methods, registered first (the inner decorator), and the documented GET route
# after it only describes the operation.
@router.get("/live", response_model=Liveness)
@router.api_route("/live", methods=["GET", "HEAD"], include_in_schema=False)
async def live() -> Liveness:
    return Liveness()


async def check_dependencies(state: State) -> Readiness:
    timeout: float = state.settings.health_check_timeout_seconds
    # One per dependency, registered by the lifespan as it opens each client.
    probes: dict[str, Probe] = getattr(state, "readiness_probes", {})
    results = await asyncio.gather(
        *(run_check(name, probe, timeout) for name, probe in probes.items())
    )
    checks = dict(zip(probes, results, strict=True))
    healthy = all(result.status == "ok" for result in checks.values())
    return Readiness(status="ok" if healthy else "error", checks=checks)


async def cancel_readiness_check(state: State) -> None:
    """Stop a check still running at shutdown, and wait for it, before the pools close."""
    running: asyncio.Task[Readiness] | None = getattr(state, "readiness_check", None)
    if running is not None and not running.done():
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@router.get(
    "/ready",
    response_model=Readiness,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Readiness}},
)
@router.api_route(
    "/ready", response_model=Readiness, methods=["GET", "HEAD"], include_in_schema=False
)
async def ready(request: Request, response: Response) -> Readiness:
    state = request.app.state
    # Single flight: requests that arrive while a check runs share its result,
    # so a burst of probes (or a load balancer with many nodes) costs the
    # database one query per worker at a time, never a pool exhausted by pings.
    running: asyncio.Task[Readiness] | None = getattr(state, "readiness_check", None)
    if running is None or running.done():
        running = asyncio.ensure_future(check_dependencies(state))
        state.readiness_check = running
    result = await asyncio.shield(running)
    if result.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return result

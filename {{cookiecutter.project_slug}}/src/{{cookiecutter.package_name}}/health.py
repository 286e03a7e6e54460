"""Health endpoints: two for the orchestrator, one for people and monitors.

``/health/live`` and ``/health/ready`` touch nothing: they answer as long as the
process has started and can serve. Readiness deliberately ignores the service's
dependencies. They are shared by every replica, so a readiness probe that checked them
would take every pod out of the load balancer at once when one blinks: the Service
would have no endpoints and clients would get the ingress's bare 502 instead of this
service's 503 + Retry-After, even on routes that never touch the failed dependency.
A failing dependency is answered per request (errors.py: a 503, reported by name for
counting), and described here:

``/health/dependencies`` checks every dependency concurrently, each bounded by a
timeout, and answers 503 naming the ones that fail, for people, dashboards and
uptime monitors; no orchestrator acts on it. The lifespan (main.py) registers one
probe per client it opens, on a connection requests cannot exhaust, so a saturated
request pool reads as busy, not down. A new dependency adds its probe there.
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


class ProcessStatus(BaseModel):
    status: Literal["ok"] = "ok"


class Dependencies(BaseModel):
    status: Literal["ok", "error"]
    checks: dict[str, CheckResult]


async def run_check(name: str, probe: Probe, seconds: float) -> CheckResult:
    try:
        async with asyncio.timeout(seconds):
            await probe()
    except TimeoutError:
        logger.warning("dependency check timed out", extra={"check": name})
        return CheckResult(status="timeout", detail=f"no answer within {seconds:g}s")
    except Exception as error:  # any failure means "down", whatever the driver raised
        # The cause goes to the log only: the probe is anonymous, and exception names
        # tell a stranger which driver and version to look up.
        logger.warning("dependency check failed", extra={"check": name, "error": repr(error)})
        return CheckResult(status="error", detail="unreachable")
    return CheckResult(status="ok")


# Every health endpoint answers HEAD too (load balancers and uptime checkers send it). FastAPI
# routes take no HEAD for a GET, and one route with both methods would be two
# operations with one id in the schema: so an undocumented route answers both
# methods, registered first (the inner decorator), and the documented GET route
# after it only describes the operation.
@router.get("/live", response_model=ProcessStatus)
@router.api_route("/live", methods=["GET", "HEAD"], include_in_schema=False)
async def live() -> ProcessStatus:
    """The process answers: an orchestrator restarts it only when it does not."""
    return ProcessStatus()


@router.get("/ready", response_model=ProcessStatus)
@router.api_route("/ready", methods=["GET", "HEAD"], include_in_schema=False)
async def ready() -> ProcessStatus:
    """The process has started and can serve: route traffic to it.

    Served only once the lifespan's startup has finished (uvicorn answers nothing
    before), and kept apart from /health/live so a condition that is this process's
    own (a warm-up, a drain) has a place that does not restart it.
    """
    return ProcessStatus()


async def check_dependencies(state: State) -> Dependencies:
    timeout: float = state.settings.health_check_timeout_seconds
    # One per dependency, registered by the lifespan as it opens each client.
    probes: dict[str, Probe] = getattr(state, "dependency_probes", {})
    results = await asyncio.gather(
        *(run_check(name, probe, timeout) for name, probe in probes.items())
    )
    checks = dict(zip(probes, results, strict=True))
    healthy = all(result.status == "ok" for result in checks.values())
    return Dependencies(status="ok" if healthy else "error", checks=checks)


async def cancel_dependency_check(state: State) -> None:
    """Stop a check still running at shutdown, and wait for it, before the pools close."""
    running: asyncio.Task[Dependencies] | None = getattr(state, "dependency_check", None)
    if running is not None and not running.done():
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


@router.get(
    "/dependencies",
    response_model=Dependencies,
    responses={status.HTTP_503_SERVICE_UNAVAILABLE: {"model": Dependencies}},
)
@router.api_route(
    "/dependencies", response_model=Dependencies, methods=["GET", "HEAD"], include_in_schema=False
)
async def dependencies(request: Request, response: Response) -> Dependencies:
    state = request.app.state
    # Single flight: requests that arrive while a check runs share its result,
    # so a burst of them (monitors in many regions, a refreshed dashboard) costs
    # the database one query per worker at a time, never a pool exhausted by pings.
    running: asyncio.Task[Dependencies] | None = getattr(state, "dependency_check", None)
    if running is None or running.done():
        running = asyncio.ensure_future(check_dependencies(state))
        state.dependency_check = running
    result = await asyncio.shield(running)
    if result.status != "ok":
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return result

"""Prometheus metrics on ``/metrics``: requests, latency and concurrency.

With several worker processes, each one writes its values to files under
PROMETHEUS_MULTIPROC_DIR (set in the image, before anything imports
prometheus_client) and ``/metrics`` adds up every worker's files, so a scrape
returns the whole service's figures whichever worker answers it. Without that
variable (tests, a single process) the metrics live in this process's memory.

Labels are bounded so that no request can create a new time series: the route
is the matched template, never the raw path; unmatched paths share one value.

Not prometheus-fastapi-instrumentator: it would replace the middleware and the route
(about 45 lines) but not the multiprocess handling, and its series (statuses grouped as
2xx, no status on the histogram) would break every service's dashboards; it also costs
9 µs more a request (the template's docs/libraries-or-our-own.md).
"""

from __future__ import annotations

import os
import time

from fastapi import APIRouter, FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.access_log import route_template

MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROCESS_DIR is not None:
    # The server empties it at start; a process started another way (uvicorn
    # --reload in development) still finds it.
    os.makedirs(MULTIPROCESS_DIR, exist_ok=True)
UNMATCHED_ROUTE = "unmatched"
# Any other method (a scanner may send anything) is counted as OTHER.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Created once per process; multiprocess_mode says how /metrics combines the
# workers' gauges ("livesum": the sum over the workers still alive).
REQUESTS = Counter("http_requests", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from receiving a request to sending the last byte of its response",
    ["method", "route", "status"],
)
IN_PROGRESS = Gauge(
    "http_requests_in_progress", "HTTP requests being handled", multiprocess_mode="livesum"
)
# The dependency health signal to alert on: readiness ignores shared dependencies
# (health.py), so their outages show here, by name, as the requests that met them.
DEPENDENCY_FAILURES = Counter(
    "dependency_failures",
    "Requests answered 503 because a dependency was unavailable",
    ["dependency"],
)

# Polled by Prometheus, like the health probes by the orchestrator: the access log
# leaves it out unless ACCESS_LOG_PROBES=true (see access_log.py).
PATH = "/metrics"

router = APIRouter()


@router.get(PATH, include_in_schema=False)
def metrics() -> Response:
    """A plain def on purpose: reading the workers' files is blocking I/O, so
    FastAPI runs it in its thread pool, off the event loop."""
    if MULTIPROCESS_DIR is None:
        registry = REGISTRY
    else:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Counts and times every request (plain ASGI: nothing but two clock reads
    and a few increments on the hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answered

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            IN_PROGRESS.dec()
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "OTHER"
            route = route_template(scope) or UNMATCHED_ROUTE
            labels = (method, route, str(status))
            REQUESTS.labels(*labels).inc()
            LATENCY.labels(*labels).observe(time.perf_counter() - started)


def count_dependency_failure(dependency: str) -> None:
    DEPENDENCY_FAILURES.labels(dependency).inc()


def forget_dead_workers() -> None:
    """Drop the live gauges of worker processes that no longer exist.

    A worker that crashed cannot clean up after itself; its in-progress and
    pool gauges would otherwise be added in forever. Counters and histograms of
    dead workers are kept: a total must not go down when a worker is replaced.
    """
    if MULTIPROCESS_DIR is None:
        return
    for name in os.listdir(MULTIPROCESS_DIR):
        if not name.startswith("gauge_live"):
            continue
        pid = int(name.rsplit("_", 1)[1].removesuffix(".db"))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid)  # type: ignore[no-untyped-call]  # unannotated upstream
        except PermissionError:
            pass  # alive, owned by someone else


def install_metrics(app: FastAPI) -> None:
    forget_dead_workers()
    app.add_middleware(MetricsMiddleware)
    app.include_router(router)

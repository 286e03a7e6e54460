"""The access log: one JSON line per request, written by the app, not the server.

The server's line is a sentence (``"GET /x HTTP/1.1" 200``); this one has
fields a log query can filter on: method, path, route template, status,
duration, request id, client address and user agent.

Plain ASGI (not BaseHTTPMiddleware): no extra task per request. It runs inside
the request-id middleware, so the request id is set while it logs, and outside
the error handling (errors.py), so a route's exception reaches it as the 500
problem the client gets; the traceback is errors.py's one ERROR line, with the
same request id. Only a failure after the response started (the client gets a
cut-off body) still raises through here: the line then shows the status sent.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.logging_config import ACCESS_LOGGER, request_id_var

logger = logging.getLogger(ACCESS_LOGGER)
# Fields that the app adds to this request's line (who called, once a dependency has
# verified it): a dict under this key in the request's state, ``request.state``.
LOG_FIELDS = "access_log_fields"


def route_template(scope: Scope) -> str | None:
    """The matched route's template (``/api/orders/{order_id}``), once routing ran.

    The router records its choice in the scope, so no pattern is matched again
    here; None when no route matched (a 404). Recent FastAPI keeps included
    routers nested: ``scope["route"]`` is then the route as its router declared
    it, without the prefixes, and the full template is in FastAPI's routing
    context. tests/test_access_log.py checks the full template, so an upgrade
    that moves it fails there, not silently in production.
    """
    context = scope.get("fastapi", {}).get("effective_route_context")
    template: str | None = getattr(context, "path_format", None) or getattr(
        scope.get("route"), "path_format", None
    )
    return template


class AccessLogMiddleware:
    """``probe_paths``: the paths that machines poll every few seconds (the
    orchestrator's health checks, a monitoring system's scrapes), each with what lies
    under it. A line per poll would bury the real traffic: they are left out unless
    ``log_probes`` (ACCESS_LOG_PROBES=true).
    """

    def __init__(
        self, app: ASGIApp, *, probe_paths: tuple[str, ...], log_probes: bool = False
    ) -> None:
        self.app = app
        self.probe_paths = frozenset(probe_paths)
        self.probe_prefixes = tuple(f"{path}/" for path in probe_paths)
        self.log_probes = log_probes

    def is_probe(self, path: str) -> bool:
        return path in self.probe_paths or path.startswith(self.probe_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            # LOG_LEVEL=WARNING and above: nothing to write, so nothing to measure.
            or not logger.isEnabledFor(logging.INFO)
            or (not self.log_probes and self.is_probe(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # What the client gets if the app raises before it answered.
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 3)
            # After the proxy-headers middleware: the real client when the
            # request came through a trusted proxy (FORWARDED_ALLOW_IPS).
            client = scope.get("client")
            added = scope.get("state", {}).get(LOG_FIELDS, {})
            logger.info(
                "%s %s %d",
                scope["method"],
                scope["path"],
                status,
                extra={
                    **added,  # first: the request's own fields below always win
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route_template(scope),
                    "status": status,
                    "duration_ms": duration_ms,
                    "request_id": request_id_var.get(),
                    "client": client[0] if client else None,
                    "user_agent": Headers(scope=scope).get("user-agent"),
                },
            )


def install_access_log(app: FastAPI, *, probe_paths: list[str], log_probes: bool) -> None:
    app.add_middleware(AccessLogMiddleware, probe_paths=tuple(probe_paths), log_probes=log_probes)

"""Request ids and error responses: every answer is JSON and carries X-Request-ID.

The request-id middleware is plain ASGI (not BaseHTTPMiddleware) so it adds no
task hop per request and sees exceptions before Starlette's server-error
middleware, which would log them a second time and re-raise.
"""

from __future__ import annotations

import json
import logging
import re
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
import socket
{%- endif %}
import uuid

{% if cookiecutter.use_postgres or cookiecutter.use_redis -%}
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
{%- else -%}
from fastapi import FastAPI, status
{%- endif %}
{%- if cookiecutter.use_redis %}
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
{%- endif %}
{%- if cookiecutter.use_postgres %}
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
{%- endif %}
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.logging_config import request_id_var

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
# Accept a caller's id only if it is short and cannot smuggle log or header syntax.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

# Failures that mean "a dependency is unreachable right now": the client should
# retry later (503), not read them as a bug in the service (500). Deliberately
# not OSError as a whole: a missing file in our own code is a bug.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    ConnectionError,
    socket.gaierror,
    TimeoutError,
{%- if cookiecutter.use_postgres %}
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
{%- endif %}
{%- if cookiecutter.use_redis %}
    RedisConnectionError,
    RedisTimeoutError,
{%- endif %}
)
{%- endif %}


def _incoming_request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == REQUEST_ID_HEADER.encode():
            candidate: str = value.decode("latin-1")
            if _VALID_REQUEST_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope)
        token = request_id_var.set(request_id)
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if response_started:
                # Too late for a 500: let the server log it and drop the connection.
                raise
            # Logged once, here, with the id the client sees; the body says nothing
            # about the internals.
            logger.exception("unhandled exception", extra={"path": scope.get("path")})
            body = json.dumps(
                {"detail": "Internal Server Error", "request_id": request_id}
            ).encode()
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": status.HTTP_500_INTERNAL_SERVER_ERROR,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            request_id_var.reset(token)


{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}


async def dependency_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("dependency unavailable", extra={"path": request.url.path, "error": repr(exc)})
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": "Service temporarily unavailable", "request_id": request_id_var.get()},
        headers={"Retry-After": "5"},
    )
{%- endif %}
{%- if cookiecutter.use_postgres %}


async def database_error(request: Request, exc: Exception) -> JSONResponse:
    # A connection the server dropped mid-query arrives as a plain DBAPIError
    # flagged as invalidated; any other database error is a bug: let it be a 500.
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return await dependency_unavailable(request, exc)
    raise exc
{%- endif %}


def install_error_handling(app: FastAPI) -> None:
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}
    for error_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(error_type, dependency_unavailable)
{%- endif %}
{%- if cookiecutter.use_postgres %}
    app.add_exception_handler(DBAPIError, database_error)
{%- endif %}
    app.add_middleware(RequestIdMiddleware)

"""Error responses: one shape for every error, and what a failure means for the client.

Every error is an RFC 9457 problem (``application/problem+json``) carrying the request
id: HTTP errors raised by routes, validation errors, a body too large, a method not
allowed, a dependency that is down (503 + Retry-After) and a bug (500). The shape is
documented once in OpenAPI as ``Problem`` and referenced by every operation for the
statuses it can return.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from time import monotonic
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.logging_config import mark_logged, request_id_var

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# How long a client should wait before retrying after a dependency failure.
RETRY_AFTER_SECONDS = 5
# A misconfiguration is logged at ERROR at most this often while it lasts (DEBUG
# between): once per episode without burying everything else, and a second
# episode (fixed, then broken again) is at ERROR again.
MISCONFIGURED_REPORT_SECONDS = 60.0
# Reads that may run twice: they change nothing (RFC 9110 safe methods with a body-free
# request), so a retry after a stale connection is invisible to the client.
RETRYABLE_METHODS = frozenset({"GET", "HEAD"})
# The methods an Allow header can list (CONNECT and TRACE are never routed).
CANDIDATE_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where the bad value is: body, query, path")
    message: str = Field(description="What is wrong, in words a client can show")
    type: str = Field(description="A stable machine-readable error code")


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    type: str = Field(default="about:blank", description="A URI identifying the problem type")
    title: str = Field(description="The HTTP status phrase")
    status: int = Field(description="The HTTP status code")
    detail: str | None = Field(default=None, description="What went wrong with this request")
    request_id: str | None = Field(
        default=None, description="Quote it in a bug report: the logs carry the same id"
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field (422 only)"
    )


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


def problem_response(
    status: int,
    detail: str | None = None,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> ProblemResponse:
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        request_id=request_id_var.get(),
        errors=errors,
    )
    return ProblemResponse(problem.model_dump(exclude_none=True), status, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the error statuses a route can answer with."""
    return {
        status: {
            "description": HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }
        for status in statuses
    }


@dataclass(frozen=True)
class Dependency:
    """How to read a backing service's exceptions (see db.py and cache.py)."""

    name: str
    # The service cannot serve right now: the client should retry later (503).
    unavailable: Callable[[BaseException], bool]
    # Wrong credentials or settings: a 503 for the client, an ERROR for the operator (once).
    misconfigured: Callable[[BaseException], bool] = lambda _: False
    # A pooled connection found dead on first use: an idempotent read may run again.
    stale_connection: Callable[[BaseException], bool] = lambda _: False
    # When a misconfiguration was last logged at ERROR (monotonic seconds), in a
    # list so that this frozen instance can update it.
    reported_at: list[float] = field(
        default_factory=lambda: [-math.inf], init=False, compare=False, repr=False
    )


class ErrorMiddleware:
    """Turns an exception that escaped the routes into a problem response.

    Plain ASGI, inside the request-id middleware, so the id is in every log line and
    body, and outside Starlette's exception middleware, so an exception is logged once,
    here, instead of once more by the server's error middleware.
    """

    def __init__(
        self,
        app: ASGIApp,
        dependencies: Sequence[Dependency] = (),
        on_unavailable: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.app = app
        self.dependencies = tuple(dependencies)
        # Told the dependency's name each time a request fails on it, for counting.
        self.on_unavailable = on_unavailable

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False
        recorded: list[Message] = []
        retryable = scope["method"] in RETRYABLE_METHODS

        async def recording_receive() -> Message:
            message = await receive()
            recorded.append(message)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        async def attempt(app_receive: Receive) -> Exception | None:
            """None once the app has answered; else what it raised before answering."""
            try:
                await self.app(scope, app_receive, tracking_send)
            except Exception as error:
                if response_started:
                    # Too late for an error response; the server drops the connection.
                    # Logged here, once, so the trace carries the request id the client
                    # saw; the server's second traceback of it is dropped (mark_logged).
                    logger.exception("exception after the response started")
                    mark_logged(error)
                    raise
                return error
            return None

        failure = await attempt(recording_receive if retryable else receive)
        if failure is not None and retryable and self._stale(failure):
            logger.info("retrying a read after a stale database connection")
            failure = await attempt(_replaying(recorded, receive))
        if failure is not None:
            await self._respond(failure)(scope, receive, send)

    def _stale(self, error: BaseException) -> bool:
        return any(dependency.stale_connection(error) for dependency in self.dependencies)

    def _respond(self, error: Exception) -> ProblemResponse:
        for dependency in self.dependencies:
            if dependency.unavailable(error):
                self._log_unavailable(dependency, error)
                self.on_unavailable(dependency.name)
                return problem_response(
                    503,
                    f"the {dependency.name} is unavailable; retry later",
                    headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                )
        logger.error("unhandled exception", exc_info=error)
        return problem_response(500)

    @staticmethod
    def _log_unavailable(dependency: Dependency, error: Exception) -> None:
        extra = {"dependency": dependency.name, "error": repr(error)}
        if dependency.misconfigured(error):
            # Every request fails the same way until an operator fixes the configuration
            # (credentials, database name, certificate): an ERROR says so, repeated only
            # every MISCONFIGURED_REPORT_SECONDS, not per request.
            now = monotonic()
            recent = now - dependency.reported_at[0] < MISCONFIGURED_REPORT_SECONDS
            if not recent:
                dependency.reported_at[0] = now
            level = logging.DEBUG if recent else logging.ERROR
            logger.log(level, "dependency refused our configuration", extra=extra)
        else:
            logger.warning("dependency unavailable", extra=extra)


def _replaying(recorded: list[Message], receive: Receive) -> Receive:
    pending = list(recorded)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


def allowed_methods(app: FastAPI, scope: Scope) -> list[str]:
    """Every method some route serves at this request's path.

    Starlette answers 405 from the first route whose path matches and lists only that
    route's methods; a resource served by several routes (GET, PUT and DELETE on one
    path) needs all of them in ``Allow``. Asking each route whether it would take the
    request with another method also covers routers included in routers.
    """
    return [
        method
        for method in CANDIDATE_METHODS
        if any(
            route.matches({**scope, "method": method})[0] is Match.FULL
            for route in app.router.routes
        )
    ]


async def http_error(request: Request, exc: Exception) -> ProblemResponse:
    error = cast("HTTPException", exc)  # registered for HTTPException only
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request.app, request.scope))
    phrase = HTTPStatus(error.status_code).phrase
    detail = error.detail if isinstance(error.detail, str) and error.detail != phrase else None
    return problem_response(error.status_code, detail, headers=headers)


async def validation_error(request: Request, exc: Exception) -> ProblemResponse:
    invalid = cast("RequestValidationError", exc)  # registered for it only
    errors = [
        FieldError(loc=list(error["loc"]), message=str(error["msg"]), type=str(error["type"]))
        for error in invalid.errors()
    ]
    return problem_response(422, "the request is not valid", errors=errors)


def install_error_handling(
    app: FastAPI,
    dependencies: Iterable[Dependency] = (),
    on_unavailable: Callable[[str], None] = lambda _: None,
) -> None:
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_middleware(
        ErrorMiddleware, dependencies=list(dependencies), on_unavailable=on_unavailable
    )
    _document_problems(app)


def _document_problems(app: FastAPI) -> None:
    """Reference ``Problem`` from every operation, for each error status it can return."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        definitions = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(definitions.pop("$defs", {}))
        schemas["Problem"] = definitions
        # FastAPI's own 422 schema is replaced by Problem below.
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                _add_error_responses(operation)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_error_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    statuses = {"500"}
    if "422" in responses:  # FastAPI adds it to every operation with parameters or a body
        statuses.add("422")
    if "requestBody" in operation:
        statuses |= {"400", "413"}  # a body that is not UTF-8 JSON; one over the size limit
    for status in statuses:
        responses[status] = {
            "description": HTTPStatus(int(status)).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
        }

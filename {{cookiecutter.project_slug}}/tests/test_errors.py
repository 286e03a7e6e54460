from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient, RemoteProtocolError
from starlette.types import Message, Receive, Scope, Send

from {{ cookiecutter.package_name }} import errors
from {{ cookiecutter.package_name }}.body_limit import BodySizeLimitMiddleware
from {{ cookiecutter.package_name }}.errors import Dependency, ErrorMiddleware
from {{ cookiecutter.package_name }}.logging_config import JsonFormatter, request_id_var
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.request_id import RequestIdMiddleware
from {{ cookiecutter.package_name }}.settings import Settings

PROBLEM = "application/problem+json"


async def test_every_response_carries_a_request_id(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert len(response.headers["x-request-id"]) >= 16


async def test_a_valid_incoming_request_id_is_kept(client: AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


@pytest.mark.parametrize("unsafe", ["a b\tc", "<script>", "x" * 129, "id;drop", "a/../b"])
async def test_an_unsafe_incoming_request_id_is_replaced(client: AsyncClient, unsafe: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": unsafe})
    assert response.headers["x-request-id"] != unsafe
    assert len(response.headers["x-request-id"]) == 32


async def test_unknown_route_is_a_404_problem(client: AsyncClient) -> None:
    response = await client.get("/no/such/route", headers={"X-Request-ID": "req-404"})
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "request_id": "req-404",
    }


async def test_405_lists_every_allowed_method(client: AsyncClient) -> None:
    response = await client.post("/health/live")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_a_body_over_the_limit_is_413_before_it_is_read(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"max_request_body_bytes": 10}))
    read: list[bytes] = []

    @app.post("/echo")
    async def echo(body: dict[str, str]) -> dict[str, str]:
        read.append(json.dumps(body).encode())
        return body

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            declared = await http.post("/echo", json={"far": "too long for ten bytes"})

            async def chunks() -> AsyncIterator[bytes]:
                yield b'{"far": '
                yield b'"too long"}'

            streamed = await http.post("/echo", content=chunks())
            small = await http.post("/echo", json={})
            json_type = {"Content-Type": "application/json"}
            at_limit = await http.post("/echo", content=b'{"a":"12"}', headers=json_type)
            over_by_one = await http.post("/echo", content=b'{"a":"123"}', headers=json_type)
    assert at_limit.status_code == 200, "exactly the limit is allowed"
    assert over_by_one.status_code == 413
    assert declared.status_code == 413
    assert declared.headers["content-type"] == PROBLEM
    assert streamed.status_code == 413, "a chunked body is counted as it arrives"
    assert small.status_code == 200
    # Only the bodies within the limit reached the route.
    assert read == [b"{}", b'{"a": "12"}']


async def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    """The app is never called and not a byte is read: the limit costs the worker nothing."""
    called: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append("app")

    async def receive() -> Message:
        called.append("receive")
        return {"type": "http.request", "body": b"x" * 11}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-length", b"11")]
    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await BodySizeLimitMiddleware(app, limit=10)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert called == []


async def test_an_undecodable_body_is_a_400_problem(client: AsyncClient, app: FastAPI) -> None:
    @app.post("/takes-json")
    async def takes_json(body: dict[str, str]) -> dict[str, str]:
        return body

    response = await client.post(
        "/takes-json", content=b'{"a": "\xff"}', headers={"content-type": "application/json"}
    )
    assert response.status_code in {400, 422}
    assert response.headers["content-type"] == PROBLEM


async def test_unhandled_exception_is_a_500_problem_logged_once(
    app: FastAPI, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR):
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "request_id": "req-500",
    }
    assert "secret internals" not in response.text
    assert response.headers["x-request-id"] == "req-500"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "the trace is logged exactly once"
    assert errors[0].exc_info is not None


async def test_a_500_carries_cors_headers_so_the_browser_can_read_its_id(
    settings: Settings,
) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://ui.example"]}))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/boom", headers={"Origin": "https://ui.example"})
    assert response.status_code == 500
    assert response.headers["access-control-allow-origin"] == "https://ui.example"
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


async def test_a_cors_preflight_carries_a_request_id(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://ui.example"]}))
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.options(
            "/health/live",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "GET"},
        )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "https://ui.example"
    assert len(response.headers["x-request-id"]) == 32


def test_log_lines_are_json_with_the_request_id() -> None:
    token = request_id_var.set("req-log")
    try:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hello you"
    assert line["request_id"] == "req-log"
    assert line["level"] == "INFO"


# --- the middleware alone, around tiny ASGI apps: no services needed -----------------------


async def call(app: RequestIdMiddleware, scope_type: str = "http") -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": scope_type, "method": "GET", "path": "/", "headers": []}
    await app(scope, receive, send)
    return sent


def stack(inner: object) -> RequestIdMiddleware:
    return RequestIdMiddleware(ErrorMiddleware(inner))  # type: ignore[arg-type]


async def test_raising_before_the_response_gives_a_500_with_the_id() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise ValueError("before")

    start, body = await call(stack(app))
    headers = dict(start["headers"])
    assert start["status"] == 500
    assert json.loads(body["body"])["request_id"] == headers[b"x-request-id"].decode()


async def test_raising_after_the_response_started_is_logged_with_the_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("mid-stream")

    ids: list[str | None] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            ids.append(request_id_var.get())

    handler = Capture(level=logging.ERROR)
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(ValueError, match="mid-stream"):
            await call(stack(app))
    finally:
        logging.getLogger().removeHandler(handler)
    assert len(ids) == 1 and ids[0], "logged once, with the request id, before re-raising"


async def test_a_response_that_fails_mid_stream_is_one_error_with_its_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through a real server: it logs an exception that reaches it once more, itself."""
    app = create_app(settings)

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"first part"
            raise ValueError("mid-stream")

        return StreamingResponse(body())

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn.Server sets a flag, not an event
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            with pytest.raises(RemoteProtocolError):
                await http.get("/stream")
    finally:
        server.should_exit = True
        await serving
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, errors
    assert errors[0]["request_id"]
    assert "mid-stream" in errors[0]["exc_info"]


async def test_other_scopes_pass_through_untouched() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    assert await call(stack(app), scope_type="lifespan") == []
    assert seen == ["lifespan"]
    assert request_id_var.get() is None


def flaky_dependency() -> Dependency:
    """A stand-in backing service: ConnectionError is an outage, PermissionError bad
    credentials, BrokenPipeError a pooled connection found dead."""
    return Dependency(
        name="thing",
        unavailable=lambda error: isinstance(error, ConnectionError | PermissionError),
        misconfigured=lambda error: isinstance(error, PermissionError),
        stale_connection=lambda error: isinstance(error, BrokenPipeError),
    )


async def call_method(app: ErrorMiddleware, method: str) -> list[Message]:
    sent: list[Message] = []
    body = [{"type": "http.request", "body": b"payload"}]

    async def receive() -> Message:
        return body.pop(0) if body else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"type": "http", "method": method, "path": "/", "headers": []}, receive, send)
    return sent


@pytest.mark.parametrize(("method", "status", "attempts"), [("GET", 200, 2), ("POST", 503, 1)])
async def test_a_stale_connection_is_retried_for_reads_only(
    method: str, status: int, attempts: int
) -> None:
    bodies: list[bytes] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        bodies.append((await receive())["body"])  # the retry reads the same body again
        if len(bodies) == 1:
            raise BrokenPipeError("the server closed this pooled connection")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    start, *_ = await call_method(ErrorMiddleware(app, [flaky_dependency()]), method)
    assert start["status"] == status
    assert bodies == [b"payload"] * attempts


async def test_an_outage_is_a_503_with_retry_after_and_bad_credentials_an_error_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[Exception] = [
        ConnectionError("down"),
        PermissionError("no"),
        PermissionError("no"),
    ]

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise failures.pop(0)

    told: list[str] = []
    middleware = ErrorMiddleware(app, [flaky_dependency()], on_unavailable=told.append)
    with caplog.at_level(logging.DEBUG):
        starts = [(await call_method(middleware, "POST"))[0] for _ in range(3)]
    assert [start["status"] for start in starts] == [503, 503, 503]
    assert all(dict(start["headers"])[b"retry-after"] == b"5" for start in starts)
    levels = [r.levelname for r in caplog.records if r.name.endswith("errors")]
    assert levels == ["WARNING", "ERROR", "DEBUG"]
    # Each failed request is reported by the dependency's name, for counting.
    assert told == ["thing"] * 3


async def test_a_misconfiguration_is_an_error_again_once_the_interval_has_passed(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(errors, "monotonic", lambda: now[0])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise PermissionError("no")

    middleware = ErrorMiddleware(app, [flaky_dependency()])
    interval = errors.MISCONFIGURED_REPORT_SECONDS
    with caplog.at_level(logging.DEBUG):
        # Two episodes: fixed after the first (no failures), broken again later.
        for offset in (0.0, 1.0, interval - 0.5, interval + 1.0, interval + 2.0):
            now[0] = 1000.0 + offset
            await call_method(middleware, "POST")
    levels = [r.levelname for r in caplog.records if r.name.endswith("errors")]
    assert levels == ["ERROR", "DEBUG", "DEBUG", "ERROR", "DEBUG"]


async def test_a_retry_that_fails_after_starting_is_logged_and_raised() -> None:
    calls: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise BrokenPipeError("stale")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("mid-stream")

    with pytest.raises(ValueError, match="mid-stream"):
        await call_method(ErrorMiddleware(app, [flaky_dependency()]), "GET")


async def test_a_retry_that_fails_again_is_answered(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise BrokenPipeError("stale twice")

    start, _ = await call_method(ErrorMiddleware(app, [flaky_dependency()]), "GET")
    assert start["status"] == 503


async def test_invalid_input_is_a_422_problem_naming_each_field(
    app: FastAPI, client: AsyncClient
) -> None:
    @app.get("/pages")
    async def pages(size: int) -> dict[str, int]:
        return {"size": size}

    response = await client.get("/pages", params={"size": "many"})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["errors"][0]["loc"] == ["query", "size"]


def test_the_schema_documents_problem_for_each_status_an_operation_can_return(
    settings: Settings,
) -> None:
    app = create_app(settings)

    @app.post("/things", status_code=201)
    async def make_thing(thing: dict[str, str], dry_run: bool = False) -> dict[str, str]:
        return thing

    schema = app.openapi()
    assert app.openapi() is schema, "generated once"
    assert "Problem" in schema["components"]["schemas"]
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    responses = schema["paths"]["/things"]["post"]["responses"]
    assert {"400", "413", "422", "500"} <= set(responses)
    for status in ("400", "413", "422", "500"):
        content = responses[status]["content"]
        assert content == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    live = schema["paths"]["/health/live"]["get"]["responses"]
    assert "422" not in live and "413" not in live, "only what the operation can return"

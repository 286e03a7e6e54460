"""The body limit around a stand-in ASGI app: no services, every branch.

The app reads every body message it is given, so what the middleware lets through and
what it refuses can be told apart without FastAPI; tests/test_errors.py checks the
same limit through the whole app.
"""

from __future__ import annotations

import json

import pytest
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.body_limit import BodySizeLimitMiddleware

LIMIT = 10


class Reader:
    """An app that reads the whole body and answers 200, recording what it read."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.read: list[Message] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        while True:
            message = await receive()
            self.read.append(message)
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    messages: list[Message], headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[Reader, list[Message]]:
    app = Reader()
    pending = list(messages)
    sent: list[Message] = []

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/"}
    if headers is not None:
        scope["headers"] = headers
    await BodySizeLimitMiddleware(app, limit=LIMIT)(scope, receive, send)
    return app, sent


def chunk(body: bytes, *, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_declared_length_over_the_limit_is_a_413_problem_naming_the_limit() -> None:
    app, sent = await call([chunk(b"x" * 11)], [(b"content-length", b"11")])
    assert app.scopes == [], "the app is never called, and not a byte is read"
    assert sent[0]["status"] == 413
    body = json.loads(sent[1]["body"])
    assert body["status"] == 413
    assert body["detail"] == f"the request body is larger than {LIMIT} bytes"


@pytest.mark.parametrize(
    "headers",
    [
        [(b"content-length", str(LIMIT).encode())],
        # Not a number: the server rejects it before the app, so it is not ours to judge.
        [(b"content-length", b"eleven")],
        # Another header with a large number is not a length.
        [(b"x-content-length", b"11"), (b"content-length", b"1")],
        # No headers at all (the ASGI spec allows leaving them out).
        None,
    ],
)
async def test_a_declared_length_within_the_limit_reaches_the_app(
    headers: list[tuple[bytes, bytes]] | None,
) -> None:
    app, sent = await call([chunk(b"x" * LIMIT)], headers)
    assert sent[0]["status"] == 200
    assert app.read == [chunk(b"x" * LIMIT)]


async def test_chunks_are_counted_together_up_to_the_limit() -> None:
    messages = [chunk(b"x" * 4, more=True), chunk(b"x" * 4, more=True), chunk(b"x" * 2)]
    app, sent = await call(messages, [])
    assert sent[0]["status"] == 200
    assert app.read == messages
    assert app.scopes == [{"type": "http", "method": "POST", "path": "/", "headers": []}]


async def test_a_chunk_that_passes_the_limit_is_a_413_raised_before_the_app_sees_it() -> None:
    messages = [chunk(b"x" * 6, more=True), chunk(b"x" * 5)]
    with pytest.raises(HTTPException) as raised:
        await call(messages, [])
    assert raised.value.status_code == 413
    assert raised.value.detail == f"the request body is larger than {LIMIT} bytes"


async def test_messages_without_a_body_count_nothing() -> None:
    # A request message may leave the body out; a disconnect has none.
    messages: list[Message] = [
        {"type": "http.request", "more_body": True},
        chunk(b"x" * LIMIT, more=True),
        {"type": "http.disconnect"},
    ]
    app, sent = await call(messages, [])
    assert sent[0]["status"] == 200
    assert app.read == messages


async def test_a_disconnect_is_never_counted_as_body() -> None:
    # Even a disconnect that (against the spec) carries bytes is not a request body.
    messages: list[Message] = [
        chunk(b"x" * LIMIT, more=True),
        {"type": "http.disconnect", "body": b"x"},
    ]
    app, _ = await call(messages, [])
    assert app.read == messages


async def test_other_scopes_reach_the_app_untouched() -> None:
    app = Reader()
    messages: list[Message] = [{"type": "websocket.receive", "bytes": b"x" * 100}]

    async def receive() -> Message:
        return messages[0]

    async def send(message: Message) -> None:
        pass

    scope: Scope = {"type": "websocket", "headers": [(b"content-length", b"100")]}
    await BodySizeLimitMiddleware(app, limit=LIMIT)(scope, receive, send)
    assert app.scopes == [scope]
    assert app.read == messages

"""The request id around a stand-in ASGI app: no services, every branch.

tests/test_errors.py checks the same promises through the whole app.
"""

from __future__ import annotations

import re

import pytest
from starlette.types import Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.logging_config import request_id_var
from {{ cookiecutter.package_name }}.request_id import RequestIdMiddleware, incoming_request_id

NEW_ID = re.compile(r"[0-9a-f]{32}")


def scope_with(headers: list[tuple[bytes, bytes]]) -> Scope:
    return {"type": "http", "method": "GET", "path": "/", "headers": headers}


@pytest.mark.parametrize("kept", ["abc-123", "A.b_C-9", "x" * 128, "0"])
def test_a_safe_incoming_id_is_kept(kept: str) -> None:
    assert incoming_request_id(scope_with([(b"x-request-id", kept.encode())])) == kept


@pytest.mark.parametrize(
    "unsafe", ["", "x" * 129, "a b", "a\tb", "a/b", "<x>", "a;b", "é", "a:b", "a\nb"]
)
def test_an_unsafe_incoming_id_is_replaced_by_a_new_one(unsafe: str) -> None:
    new = incoming_request_id(scope_with([(b"x-request-id", unsafe.encode())]))
    assert NEW_ID.fullmatch(new), new


def test_without_an_incoming_id_each_request_gets_a_new_random_one() -> None:
    first = incoming_request_id(scope_with([(b"x-other", b"abc")]))
    second = incoming_request_id(scope_with([]))
    assert NEW_ID.fullmatch(first)
    assert NEW_ID.fullmatch(second)
    assert first != second


async def call(
    scope: Scope, app_raises: BaseException | None = None
) -> tuple[list[str | None], list[Message]]:
    """Run the middleware around an app that answers with a header and a body."""
    seen: list[str | None] = []
    sent: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(request_id_var.get())
        assert await receive() == {"type": "http.request", "body": b"sent"}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-app", b"1")]})
        await send({"type": "http.response.body", "body": b"ok"})
        if app_raises is not None:
            raise app_raises

    async def receive() -> Message:
        return {"type": "http.request", "body": b"sent"}

    async def send(message: Message) -> None:
        sent.append(message)

    await RequestIdMiddleware(app)(scope, receive, send)
    return seen, sent


async def test_the_id_is_set_for_the_app_and_added_to_the_response_start_only() -> None:
    seen, sent = await call(scope_with([(b"x-request-id", b"abc-123")]))
    assert seen == ["abc-123"], "log lines written by the app carry the id"
    assert sent[0]["headers"] == [(b"x-app", b"1"), (b"x-request-id", b"abc-123")]
    assert sent[1] == {"type": "http.response.body", "body": b"ok"}
    assert request_id_var.get() is None, "the id does not outlive the request"


async def test_the_id_is_reset_when_the_app_raises() -> None:
    with pytest.raises(RuntimeError):
        await call(scope_with([]), app_raises=RuntimeError("boom"))
    assert request_id_var.get() is None


async def test_other_scopes_get_no_id() -> None:
    seen, sent = await call({"type": "websocket", "headers": [(b"x-request-id", b"abc")]})
    assert seen == [None]
    assert sent[0]["headers"] == [(b"x-app", b"1")]

"""The app's access log: one JSON line per request, with fields to filter on."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient
from starlette.types import Receive, Scope, Send

from {{ cookiecutter.package_name }}.access_log import AccessLogMiddleware
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

ACCESS_LOGGER = "{{ cookiecutter.package_name }}.access"


def add_nested_route(app: FastAPI) -> None:
    """A route with a path parameter behind a router prefix, like the service's own."""
    inner = APIRouter(prefix="/things")

    @inner.get("/{thing_id}")
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @inner.get("/{thing_id}/boom")
    async def boom(thing_id: int) -> None:
        raise RuntimeError("secret internals")

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)
    app.include_router(outer)


@asynccontextmanager
async def serve(settings: Settings, **changes: object) -> AsyncIterator[AsyncClient]:
    # Made inside the test, so the JSON handler writes to the stdout capsys reads.
    app = create_app(settings.model_copy(update=changes))
    add_nested_route(app)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.7", 5))
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """What the service wrote to stdout: every line must be one JSON object."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == ACCESS_LOGGER]


async def test_one_json_line_per_request_with_its_fields(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(settings) as http:
        response = await http.get(
            "/outer/things/42", headers={"User-Agent": "probe/1.0", "X-Request-ID": "req-a"}
        )
    assert response.status_code == 200
    lines = log_lines(capsys)
    [line] = access_lines(lines)
    assert line["method"] == "GET"
    assert line["path"] == "/outer/things/42"
    assert line["route"] == "/outer/things/{thing_id}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["request_id"] == "req-a"
    assert line["client"] == "203.0.113.7"
    assert line["user_agent"] == "probe/1.0"
    assert line["level"] == "INFO"


async def test_unmatched_path_has_no_route(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(settings) as http:
        await http.get("/no/such/page")
    lines = log_lines(capsys)
    [line] = access_lines(lines)
    assert line["status"] == 404
    assert line["route"] is None


async def test_an_error_is_logged_once_with_its_traceback_and_the_same_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serve(settings) as http:
        response = await http.get("/outer/things/1/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    lines = log_lines(capsys)
    [line] = access_lines(lines)
    assert line["status"] == 500
    assert line["request_id"] == "req-boom"
    errors = [line for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1
    [error] = errors
    assert "RuntimeError: secret internals" in str(error["exc_info"])
    assert error["request_id"] == "req-boom"


@pytest.mark.parametrize(("log_probes", "expected"), [(False, 0), (True, 2)])
async def test_probes_are_logged_only_when_asked(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_probes: bool, expected: int
) -> None:
    async with serve(settings, access_log_probes=log_probes) as http:
        await http.get("/health/live")
        await http.get("/health/ready")
    assert len(access_lines(log_lines(capsys))) == expected


@pytest.mark.parametrize(("level", "expected"), [("INFO", 1), ("WARNING", 0)])
async def test_log_level_governs_the_access_log(
    settings: Settings, capsys: pytest.CaptureFixture[str], level: str, expected: int
) -> None:
    async with serve(settings, log_level=level) as http:
        await http.get("/outer/things/7")
    assert len(access_lines(log_lines(capsys))) == expected
    assert logging.getLogger(ACCESS_LOGGER).getEffectiveLevel() == logging.getLevelName(level)


@pytest.mark.parametrize(
    ("path", "probe"),
    [
        ("/health", True),
        ("/health/live", True),
        ("/status", True),
        ("/status-page", False),
        ("/healthy", False),
        ("/api/health", False),
    ],
)
def test_a_probe_is_its_path_or_what_lies_under_it(path: str, probe: bool) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    middleware = AccessLogMiddleware(app, probe_paths=("/health", "/status"))
    assert middleware.is_probe(path) is probe

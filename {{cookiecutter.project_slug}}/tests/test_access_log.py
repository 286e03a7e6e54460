"""The app's access log: one JSON line per request, with fields to filter on."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import APIRouter, FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.logging_config import JsonFormatter
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
async def serve(
    settings: Settings, caplog: pytest.LogCaptureFixture, **changes: object
) -> AsyncIterator[AsyncClient]:
    app = create_app(settings.model_copy(update=changes))
    # create_app installs the JSON handler on the root logger; keep capturing too.
    logging.getLogger().addHandler(caplog.handler)
    add_nested_route(app)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False, client=("203.0.113.7", 5))
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            yield http


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == ACCESS_LOGGER]


async def test_one_json_line_per_request_with_its_fields(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(settings, caplog) as http:
        response = await http.get(
            "/outer/things/42", headers={"User-Agent": "probe/1.0", "X-Request-ID": "req-a"}
        )
    assert response.status_code == 200
    [line] = access_lines(caplog)
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
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(settings, caplog) as http:
        await http.get("/no/such/page")
    [line] = access_lines(caplog)
    assert line["status"] == 404
    assert line["route"] is None


async def test_an_error_is_logged_once_with_its_traceback_and_the_same_request_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    async with serve(settings, caplog) as http:
        response = await http.get("/outer/things/1/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    [line] = access_lines(caplog)
    assert line["status"] == 500
    assert line["request_id"] == "req-boom"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    error = json.loads(JsonFormatter().format(errors[0]))
    assert "RuntimeError: secret internals" in str(error["exc_info"])
    assert error["request_id"] == "req-boom"


@pytest.mark.parametrize(("log_probes", "expected"), [(False, 0), (True, 2)])
async def test_probes_are_logged_only_when_asked(
    settings: Settings, caplog: pytest.LogCaptureFixture, log_probes: bool, expected: int
) -> None:
    async with serve(settings, caplog, access_log_probes=log_probes) as http:
        await http.get("/health/live")
{%- if cookiecutter.use_metrics %}
        await http.get("/metrics")
{%- else %}
        await http.get("/health/live")
{%- endif %}
    assert len(access_lines(caplog)) == expected


@pytest.mark.parametrize(("level", "expected"), [("INFO", 1), ("WARNING", 0)])
async def test_log_level_governs_the_access_log(
    settings: Settings, caplog: pytest.LogCaptureFixture, level: str, expected: int
) -> None:
    async with serve(settings, caplog, log_level=level) as http:
        await http.get("/outer/things/7")
    assert len(access_lines(caplog)) == expected
    assert logging.getLogger(ACCESS_LOGGER).getEffectiveLevel() == logging.getLevelName(level)

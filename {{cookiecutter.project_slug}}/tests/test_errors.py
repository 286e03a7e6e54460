from __future__ import annotations

import json
import logging

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
{%- if cookiecutter.use_postgres %}
from sqlalchemy.exc import DBAPIError
{%- endif %}

from {{ cookiecutter.package_name }}.logging_config import JsonFormatter, request_id_var


async def test_every_response_carries_a_request_id(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert len(response.headers["x-request-id"]) >= 16


async def test_a_valid_incoming_request_id_is_kept(client: AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_an_unsafe_incoming_request_id_is_replaced(client: AsyncClient) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": "a b\tc"})
    assert response.headers["x-request-id"] != "a b\tc"


async def test_unknown_route_is_404_json(client: AsyncClient) -> None:
    response = await client.get("/no/such/route")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
    assert "x-request-id" in response.headers


async def test_unhandled_exception_is_500_json_without_trace(
    app: FastAPI, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR):
        response = await client.get("/boom", headers={"X-Request-ID": "req-500"})
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error", "request_id": "req-500"}
    assert "secret internals" not in response.text
    assert response.headers["x-request-id"] == "req-500"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "the trace is logged exactly once"
    assert errors[0].exc_info is not None


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
{%- if cookiecutter.use_postgres %}


@pytest.mark.parametrize(("invalidated", "expected"), [(True, 503), (False, 500)])
async def test_database_errors_are_503_only_when_the_connection_dropped(
    app: FastAPI, client: AsyncClient, invalidated: bool, expected: int
) -> None:
    @app.get("/db-error")
    async def db_error() -> None:
        raise DBAPIError(
            "SELECT 1", None, ConnectionResetError("gone"), connection_invalidated=invalidated
        )

    response = await client.get("/db-error")
    assert response.status_code == expected
    assert response.json()["request_id"] == response.headers["x-request-id"]
{%- endif %}

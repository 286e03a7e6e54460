"""/metrics and authentication: each refusal counted under its reason."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from {{ cookiecutter.package_name }}.auth import require
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.auth import Issuer

from .test_metrics import scrape

GUARDED = "/test/guarded"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)
    app.add_api_route(GUARDED, lambda: {}, dependencies=[require("things:write")])
    return app


async def rejected(client: AsyncClient, reason: str) -> float:
    samples = await scrape(client)
    return samples.get(("auth_rejected_tokens_total", (("reason", reason),)), 0.0)


@pytest.mark.parametrize(
    ("reason", "token"),
    [("expired", "expired"), ("malformed", "not-a-jwt"), ("insufficient_scope", "reader")],
)
async def test_each_refusal_is_counted_under_its_reason(
    client: AsyncClient, issuer: Issuer, reason: str, token: str
) -> None:
    tokens = {"expired": issuer.token(lifetime=-3600), "reader": issuer.token("things:read")}
    before = await rejected(client, reason)
    for _ in range(2):
        headers = {"Authorization": f"Bearer {tokens.get(token, token)}"}
        assert (await client.get(GUARDED, headers=headers)).status_code in {401, 403}
    assert await rejected(client, reason) == before + 2


async def test_a_missing_token_is_counted_and_an_open_route_counts_nothing(
    client: AsyncClient,
) -> None:
    del client.headers["Authorization"]
    before = await rejected(client, "missing")
    await client.get("/health/live")
    assert await rejected(client, "missing") == before
    await client.get(GUARDED)
    assert await rejected(client, "missing") == before + 1

"""Rate limits in a service that authenticates: a verified caller is counted by subject."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.auth import require
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.auth import Issuer

LIMIT = 2
GUARDED = "/test/guarded"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings.model_copy(update={"rate_limit_default": f"{LIMIT}/minute"}))
    app.add_api_route(GUARDED, lambda: {}, dependencies=[require()])
    return app


def from_address(app: FastAPI, address: str, token: str | None = None) -> AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = ASGITransport(app=app, client=(address, 40000))
    return AsyncClient(transport=transport, base_url="http://test", headers=headers)


async def statuses(http: AsyncClient, count: int) -> list[int]:
    return [(await http.get(GUARDED)).status_code for _ in range(count)]


async def test_one_subject_is_one_count_from_any_address(
    app: FastAPI, client: AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(sub="alice")
    async with from_address(app, "203.0.113.1", token) as first:
        assert await statuses(first, LIMIT) == [200] * LIMIT
    async with from_address(app, "203.0.113.2", token) as second:
        assert await statuses(second, 1) == [429]


async def test_two_subjects_at_one_address_have_their_own_counts(
    app: FastAPI, client: AsyncClient, issuer: Issuer
) -> None:
    async with from_address(app, "203.0.113.1", issuer.token(sub="alice")) as alice:
        assert await statuses(alice, LIMIT + 1) == [200] * LIMIT + [429]
    async with from_address(app, "203.0.113.1", issuer.token(sub="bob")) as bob:
        assert await statuses(bob, 1) == [200]


async def test_a_caller_without_a_valid_token_is_counted_by_address(
    app: FastAPI, client: AsyncClient, issuer: Issuer
) -> None:
    async with from_address(app, "203.0.113.1", "not-a-jwt") as forger:
        assert await statuses(forger, LIMIT + 1) == [401] * LIMIT + [429]
    # Another address is not affected, and neither is a valid caller at the same one.
    async with from_address(app, "203.0.113.2") as other:
        assert await statuses(other, 1) == [401]
    async with from_address(app, "203.0.113.1", issuer.token(sub="alice")) as alice:
        assert await statuses(alice, 1) == [200]


async def test_a_token_is_verified_once_per_request(
    app: FastAPI, client: AsyncClient, issuer: Issuer
) -> None:
    verifier = app.state.verifier
    verified: list[str] = []
    verify = verifier.verify

    async def counting(token: str) -> object:
        verified.append(token)
        return await verify(token)

    verifier.verify = counting
    async with from_address(app, "203.0.113.1", issuer.token(sub="alice")) as alice:
        assert await statuses(alice, 1) == [200]
    assert len(verified) == 1

"""Rate limits against the real Redis: counts, fields, overrides, exemptions, outages."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from fastapi import FastAPI, HTTPException
from httpx import ASGITransport, AsyncClient, Response
from limits import WindowStats, parse
from redis.exceptions import ConnectionError as RedisConnectionError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from {{ cookiecutter.package_name }} import rate_limit
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import ConfigurationError, Settings, load_settings

LIMIT = 3
FIELD = re.compile(r'"(?P<policy>\w+)";r=(?P<remaining>\d+);t=(?P<reset>\d+)')


async def plain() -> dict[str, str]:
    return {}


@rate_limit.limit("2/minute")
async def strict() -> dict[str, str]:
    return {}


@rate_limit.limit(fail_closed=True)
async def closed() -> dict[str, str]:
    return {}


async def missing() -> None:
    raise HTTPException(404, "nothing here")


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings.model_copy(update={"rate_limit_default": f"{LIMIT}/minute"}))
    # Added after create_app, like any route of the service: limited by default.
    app.add_api_route("/test/plain", plain)
    app.add_api_route("/test/strict", strict)
    app.add_api_route("/test/closed", closed)
    app.add_api_route("/test/missing", missing)
    return app


@pytest.fixture
async def peer(app: FastAPI, client: AsyncClient) -> AsyncIterator[Any]:
    """Clients from a given address, through uvicorn's proxy-headers handling as served."""
    opened: list[AsyncClient] = []

    def make(address: str, trusted: str = "127.0.0.1") -> AsyncClient:
        # uvicorn and Starlette each type ASGI apps their own way: the same protocol.
        served: Any = ProxyHeadersMiddleware(cast("Any", app), trusted_hosts=trusted)
        transport = ASGITransport(app=served, client=(address, 40000))
        http = AsyncClient(transport=transport, base_url="http://test")
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


def field(response: Response, part: str) -> int:
    match = FIELD.fullmatch(response.headers["RateLimit"])
    assert match is not None, response.headers["RateLimit"]
    return int(match[part])


def remaining(response: Response) -> int:
    return field(response, "remaining")


async def test_each_answer_says_what_is_left_and_the_limit_is_a_429_problem(
    client: AsyncClient,
) -> None:
    answers = [await client.get("/test/plain") for _ in range(LIMIT)]
    assert [a.status_code for a in answers] == [200] * LIMIT
    assert [remaining(a) for a in answers] == [2, 1, 0]
    for answer in answers:
        assert answer.headers["RateLimit-Policy"] == f'"default";q={LIMIT};w=60'
        assert 0 < field(answer, "reset") <= 60

    refused = await client.get("/test/plain")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["status"] == 429
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert remaining(refused) == 0
    assert refused.headers["RateLimit-Policy"] == f'"default";q={LIMIT};w=60'


async def test_the_default_policy_is_one_count_across_routes_and_errors_carry_the_fields(
    client: AsyncClient,
) -> None:
    await client.get("/test/plain")
    not_found = await client.get("/test/missing")
    assert not_found.status_code == 404
    assert remaining(not_found) == LIMIT - 2
    assert remaining(await client.get("/test/missing")) == 0
    assert (await client.get("/test/missing")).status_code == 429


async def test_a_route_with_its_own_policy_has_its_own_count(client: AsyncClient) -> None:
    for _ in range(LIMIT):
        await client.get("/test/plain")
    assert (await client.get("/test/plain")).status_code == 429
    answers = [await client.get("/test/strict") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Policy"] == '"strict";q=2;w=60'
    assert answers[0].headers["RateLimit"].startswith('"strict";r=1;')


def first_twin() -> Any:
    @rate_limit.limit("1/minute")
    async def twin() -> dict[str, str]:
        return {}

    return twin


def second_twin() -> Any:
    @rate_limit.limit("1/minute")
    async def twin() -> dict[str, str]:
        return {}

    return twin


async def test_endpoints_of_one_name_in_two_places_have_their_own_counts(
    app: FastAPI, client: AsyncClient
) -> None:
    app.add_api_route("/test/twin/1", first_twin())
    app.add_api_route("/test/twin/2", second_twin())
    assert (await client.get("/test/twin/1")).status_code == 200
    second = await client.get("/test/twin/2")
    assert second.status_code == 200
    assert second.headers["RateLimit-Policy"] == '"twin";q=1;w=60'
    assert (await client.get("/test/twin/1")).status_code == 429


async def test_probes_are_never_limited(client: AsyncClient) -> None:
    for _ in range(LIMIT + 2):
        answer = await client.get("/health/live")
        assert answer.status_code == 200
        assert "RateLimit" not in answer.headers


async def test_each_client_address_has_its_own_count(peer: Any) -> None:
    first, second = peer("203.0.113.1"), peer("203.0.113.2")
    for _ in range(LIMIT):
        await first.get("/test/plain")
    assert (await first.get("/test/plain")).status_code == 429
    assert remaining(await second.get("/test/plain")) == LIMIT - 1


async def test_forwarded_for_counts_only_from_a_trusted_proxy(peer: Any) -> None:
    stranger = peer("203.0.113.9")
    # A client that makes up a new address for each request is still one client.
    statuses = [
        (
            await stranger.get("/test/plain", headers={"X-Forwarded-For": f"198.51.100.{n}"})
        ).status_code
        for n in range(LIMIT + 1)
    ]
    assert statuses == [200] * LIMIT + [429]
    # Through the trusted proxy, each forwarded client has its own count.
    proxy = peer("127.0.0.1")
    for n in range(LIMIT + 1):
        answer = await proxy.get("/test/plain", headers={"X-Forwarded-For": f"198.51.100.{n}"})
        assert remaining(answer) == LIMIT - 1


async def test_one_round_trip_answers_what_the_strategys_own_calls_answer(
    app: FastAPI, client: AsyncClient
) -> None:
    """RateLimiter.hit drives the library's scripts itself: the same count and window as
    limits' hit and get_window_stats (red the day limits changes what its scripts take)."""
    limiter: rate_limit.RateLimiter = app.state.rate_limiter
    quota, own, library = parse("3/minute"), ("test", "one-trip"), ("test", "strategy")
    # The strategy loads its scripts, so that every hit below takes the one round trip.
    await limiter.window.get_window_stats(quota, *library)
    for _ in range(4):
        allowed, stats = await limiter.hit(quota, *own)
        assert allowed == await limiter.window.hit(quota, *library)
        expected = await limiter.window.get_window_stats(quota, *library)
        assert stats.remaining == expected.remaining
        assert abs(stats.reset_time - expected.reset_time) < 1.0
    assert (allowed, stats.remaining) == (False, 0)
    assert stats == await limiter.window.get_window_stats(quota, *own)


async def test_a_redis_that_forgot_the_scripts_is_given_them_again(
    app: FastAPI, client: AsyncClient
) -> None:
    """A restarted Redis has no scripts: the check loads them, and counts the request once,
    whether it lacked both or only the window read's."""
    limiter: rate_limit.RateLimiter = app.state.rate_limiter
    assert remaining(await client.get("/test/plain")) == LIMIT - 1
    await limiter.redis.script_flush()
    assert remaining(await client.get("/test/plain")) == LIMIT - 2
    await limiter.redis.script_flush()
    await limiter.window.hit(parse("1/minute"), "test", "loads the hit's script only")
    assert remaining(await client.get("/test/plain")) == 0
    assert (await client.get("/test/plain")).status_code == 429


@pytest.fixture
def redis_down(app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make the limiter's Redis calls fail while the returned flag is set; retry at once.

    (The outage of the real server, stopped and paused, is the template's Docker test.)
    """
    down = [True]
    monkeypatch.setattr(rate_limit, "RECHECK_SECONDS", 0.0)

    async def hit(*args: Any, **kwargs: Any) -> tuple[bool, WindowStats]:
        if down[0]:
            raise RedisConnectionError("Connection refused")
        return await original(*args, **kwargs)

    limiter: rate_limit.RateLimiter = app.state.rate_limiter
    original = limiter.hit
    monkeypatch.setattr(limiter, "hit", hit)
    return down


async def test_without_redis_requests_pass_with_one_warning_per_outage(
    client: AsyncClient, redis_down: list[bool], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=rate_limit.__name__)
    answers = [await client.get("/test/plain") for _ in range(LIMIT + 2)]
    assert [a.status_code for a in answers] == [200] * (LIMIT + 2)
    assert "RateLimit" not in answers[0].headers
    assert answers[0].headers["RateLimit-Policy"] == f'"default";q={LIMIT};w=60'
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1

    redis_down[0] = False
    assert remaining(await client.get("/test/plain")) == LIMIT - 1
    assert any(r.getMessage() == "rate limits are checked again" for r in caplog.records)
    redis_down[0] = True
    await client.get("/test/plain")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


async def test_while_redis_was_just_found_down_requests_do_not_wait_on_it(
    client: AsyncClient, redis_down: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rate_limit, "RECHECK_SECONDS", 3600.0)
    await client.get("/test/plain")
    redis_down[0] = False  # back, but not tried again before RECHECK_SECONDS
    assert "RateLimit" not in (await client.get("/test/plain")).headers


async def test_a_check_that_fails_slowly_is_not_tried_again_at_once(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung Redis fails a command only after its timeout: the next try is RECHECK_SECONDS
    after that failure, not after the start of the attempt."""
    clock = [1000.0]
    tries: list[float] = []

    async def hung(*_args: Any, **_kwargs: Any) -> tuple[bool, WindowStats]:
        tries.append(clock[0])
        clock[0] += 5.0  # REDIS_TIMEOUT_SECONDS go by
        raise RedisConnectionError("Timeout reading from socket")

    monkeypatch.setattr(rate_limit, "monotonic", lambda: clock[0])
    monkeypatch.setattr(app.state.rate_limiter, "hit", hung)
    await client.get("/test/plain")
    await client.get("/test/plain")
    assert tries == [1000.0]
    clock[0] += rate_limit.RECHECK_SECONDS
    await client.get("/test/plain")
    assert len(tries) == 2


async def test_requests_during_an_outage_do_not_put_off_the_next_try(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under steady load a request comes within every RECHECK_SECONDS: each passes (or
    fails closed) without asking Redis, and must not move the next try later, or the
    limits would never be checked again while requests keep coming."""
    clock = [1000.0]
    tries: list[float] = []

    async def down(*_args: Any, **_kwargs: Any) -> tuple[bool, WindowStats]:
        tries.append(clock[0])
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(rate_limit, "monotonic", lambda: clock[0])
    monkeypatch.setattr(app.state.rate_limiter, "hit", down)
    for _ in range(4):  # a request every half interval
        await client.get("/test/plain")
        clock[0] += rate_limit.RECHECK_SECONDS / 2
    assert tries == [1000.0, 1000.0 + rate_limit.RECHECK_SECONDS]


async def test_a_route_that_fails_closed_answers_503_without_redis(
    client: AsyncClient, redis_down: list[bool]
) -> None:
    answer = await client.get("/test/closed")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    assert "redis" in answer.json()["detail"]
    assert answer.headers["Retry-After"]
    redis_down[0] = False
    assert (await client.get("/test/closed")).status_code == 200


async def test_browser_code_may_read_the_fields(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["https://app.example"]}))
    app.add_api_route("/test/plain", plain)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            answer = await http.get("/test/plain", headers={"Origin": "https://app.example"})
    exposed = {name.strip() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {"RateLimit", "RateLimit-Policy", "Retry-After"} <= exposed


def test_openapi_documents_the_429_and_the_fields(app: FastAPI) -> None:
    operation = app.openapi()["paths"]["/test/plain"]["get"]
    assert operation["responses"]["429"]["content"]["application/problem+json"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    for response in operation["responses"].values():
        assert {"RateLimit", "RateLimit-Policy"} <= set(response["headers"])


@pytest.mark.parametrize("rate", ["lots", "10/fortnight", "1/second;5/minute", ""])
def test_a_bad_default_rate_stops_the_service_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, rate: str
) -> None:
    monkeypatch.setenv("RATE_LIMIT_DEFAULT", rate)
    with pytest.raises(ConfigurationError, match="RATE_LIMIT_DEFAULT: must be one rate"):
        load_settings()


@pytest.mark.parametrize("rate", ["100/minute", "10 per 30 seconds", "5/second"])
def test_a_good_default_rate_is_taken(settings: Settings, rate: str) -> None:
    taken = Settings(_env_file=None, **{**settings.model_dump(), "rate_limit_default": rate})
    assert taken.rate_limit_default == rate

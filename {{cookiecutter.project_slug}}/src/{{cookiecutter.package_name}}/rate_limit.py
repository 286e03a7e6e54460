"""Rate limits: each caller's requests per route, counted in Redis for every worker and replica.

Every route included after ``install`` is limited, to RATE_LIMIT_DEFAULT unless its
endpoint names its own policy with ``@limit("10/minute")``; the probes and ``/metrics``
(the paths given as exempt) never are. The caller is the verified token's subject when
the service authenticates, else the client address as the server gives it: the server
replaces the peer's address by the X-Forwarded-For one only when the peer is a trusted
proxy (FORWARDED_ALLOW_IPS), so a header sent by anyone else changes nothing here.

The counting is the ``limits`` library's moving window in Redis (its Lua script per hit,
atomic on the server): exact across processes, N requests in any window of the policy's
length, never N per process. Every answer of a limited route carries the policy and what
is left of it in the ``RateLimit-Policy`` and ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers-10; a refusal is a 429 problem with Retry-After.
The hit and what is left travel in one round trip (``RateLimiter.hit``).

Redis unavailable: a request passes unchecked (fail-open) unless its policy says
``fail_closed=True``, then it is a 503 like any request that needs Redis. The first
failure logs one WARNING; until Redis answers again, requests do not wait on it: a check
is tried at most once per RECHECK_SECONDS and the others pass (or fail closed) at once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from time import monotonic
from typing import Any, TypeVar, cast

from fastapi import Depends, FastAPI, HTTPException, Request
from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from {{ cookiecutter.package_name }}.access_log import route_template
from {{ cookiecutter.package_name }}.cache import is_unavailable
from {{ cookiecutter.package_name }}.errors import PROBLEM_MEDIA_TYPE, PROBLEM_REF

logger = logging.getLogger(__name__)

Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

DEFAULT_POLICY = "default"
# While Redis is unavailable, one request per this many seconds tries it again.
RECHECK_SECONDS = 1.0
# The answer's fields, put in the request's state by the check, added by the middleware.
HEADERS = "rate_limit_headers"
# Prefix of the keys in Redis, beside the service's own keys.
KEY_PREFIX = "rate-limit"
# The route label when no template is known (never the raw path: unbounded series).
UNMATCHED_ROUTE = "unmatched"


@dataclass(frozen=True)
class Policy:
    """A route's limit: ``rate`` None is RATE_LIMIT_DEFAULT. ``name`` is what clients see,
    ``count`` names its count in Redis (two modules may each have a ``list_orders``)."""

    name: str
    count: str
    rate: RateLimitItem | None = None
    fail_closed: bool = False


_POLICIES: dict[Callable[..., Any], Policy] = {}


def limit(rate: str | None = None, *, fail_closed: bool = False) -> Callable[[Endpoint], Endpoint]:
    """An endpoint's own policy, its own count per caller: ``@limit("10/minute")``.

    ``rate`` None keeps RATE_LIMIT_DEFAULT (with its own count); ``fail_closed`` answers
    503 while Redis is unavailable instead of letting requests through unchecked. A bad
    rate fails at import, naming itself.
    """
    parsed = parse(rate) if rate is not None else None

    def decorate(endpoint: Endpoint) -> Endpoint:
        count = f"{endpoint.__module__}.{endpoint.__qualname__}"
        _POLICIES[endpoint] = Policy(endpoint.__name__, count, parsed, fail_closed)
        return endpoint

    return decorate


def client_address(request: Request) -> str:
    # After the server's proxy-headers handling: see the module's docstring.
    return request.client.host if request.client else "unknown"


class StillUnavailableError(RedisConnectionError):
    """Raised without asking Redis, within RECHECK_SECONDS of its last failure."""


class RateLimiter:
    """One per worker: the moving window over the app's Redis pool, and the episode state."""

    def __init__(
        self,
        redis: Redis,
        default: str,
        on_decision: Callable[[str, str], None] = lambda _route, _decision: None,
    ) -> None:
        # The app's own pool: no second set of connections, closed with the app's client.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            # limits types its pass-through options as scalars; its redis-py bridge hands
            # this one to redis.asyncio.Redis (use_basic), which is what it is for.
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
            key_prefix=KEY_PREFIX,
        )
        self.window = MovingWindowRateLimiter(storage)
        self.redis = redis
        # hit() sends the library's own scripts, as its redis-py bridge holds them.
        self.scripts = cast("RedispyBridge", storage.bridge)
        self.default = Policy(DEFAULT_POLICY, DEFAULT_POLICY)
        self.default_rate = parse(default)
        # Told the route and "allowed", "limited" or "unchecked" (Redis unavailable).
        self.on_decision = on_decision
        # Since when Redis is unavailable (None: it answers), and when it is tried next.
        self.unavailable_since: float | None = None
        self.retry_at = -math.inf

    async def check(self, request: Request, subject: str | None) -> None:
        """Count this request against its policy; raise the 429 (or the 503) if refused."""
        route = route_template(request.scope) or UNMATCHED_ROUTE
        endpoint: Callable[..., Any] | None = getattr(request.scope.get("route"), "endpoint", None)
        policy = self.default if endpoint is None else _POLICIES.get(endpoint, self.default)
        quota = policy.rate or self.default_rate
        headers = request.scope.setdefault("state", {}).setdefault(HEADERS, {})
        headers["RateLimit-Policy"] = f'"{policy.name}";q={quota.amount};w={quota.get_expiry()}'
        key = f"subject:{subject}" if subject is not None else f"address:{client_address(request)}"
        try:
            allowed, remaining, reset = await self._hit(quota, policy.count, key)
        except Exception as error:
            if not is_unavailable(error):
                raise
            if not isinstance(error, StillUnavailableError):
                # Only a real attempt moves the next one: under steady load a request
                # comes within every RECHECK_SECONDS, and Redis would never be asked again.
                self._unavailable(error)
            if policy.fail_closed:
                raise  # the 503 naming Redis (errors.py)
            self.on_decision(route, "unchecked")
            return
        headers["RateLimit"] = f'"{policy.name}";r={remaining};t={reset}'
        self.on_decision(route, "allowed" if allowed else "limited")
        if not allowed:
            raise HTTPException(
                HTTPStatus.TOO_MANY_REQUESTS,
                f"the {policy.name} rate limit ({quota.amount} per {quota.get_expiry()} s) "
                f"is used up; retry in {reset} s",
                headers={"Retry-After": str(reset)},
            )

    async def _hit(self, quota: RateLimitItem, *identifiers: str) -> tuple[bool, int, int]:
        """Whether the request fits, then what is left and the seconds until more is."""
        now = monotonic()
        if self.unavailable_since is not None and now < self.retry_at:
            raise StillUnavailableError("Redis was unavailable moments ago")
        # Before the attempt too: requests meanwhile do not all wait on the same outage.
        self.retry_at = now + RECHECK_SECONDS
        allowed, stats = await self.hit(quota, *identifiers)
        if self.unavailable_since is not None:
            logger.info(
                "rate limits are checked again",
                extra={
                    "dependency": "redis",
                    "unchecked_seconds": round(now - self.unavailable_since, 1),
                },
            )
            self.unavailable_since = None
        # At least 1: "retry in 0 s" would invite an immediate, refused retry.
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        return allowed, max(0, stats.remaining), reset

    async def hit(self, quota: RateLimitItem, *identifiers: str) -> tuple[bool, WindowStats]:
        """The strategy's ``hit``, then its ``get_window_stats``, in one round trip.

        limits has no call that returns both, and its two calls are two round trips
        (measured: a third more client CPU per check, and one more wait). This sends the
        same two scripts of its own (its redis-py bridge's, with the keys and arguments
        its ``acquire_entry`` and ``get_moving_window`` give them) as one pipeline, no
        script of ours; the service's tests compare the answer with the strategy's. Not
        a transaction: the hit is atomic in its script, and the window read just after
        it is what get_window_stats says.
        """
        key = self.scripts.prefixed_key(quota.key_for(*identifiers))
        expiry = quota.get_expiry()
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            acquire, window = self.scripts.lua_acquire_moving_window, self.scripts.lua_moving_window
            pipe.evalsha(acquire.sha, 1, key, now, quota.amount, expiry, 1)
            pipe.evalsha(window.sha, 1, key, now - expiry, quota.amount)
            acquired, entries = await pipe.execute(raise_on_error=False)
        if isinstance(acquired, NoScriptError):
            # A Redis that restarted forgot the scripts: the strategy loads them again.
            allowed = await self.window.hit(quota, *identifiers)
            return allowed, await self.window.get_window_stats(quota, *identifiers)
        if isinstance(acquired, Exception):
            raise acquired
        if isinstance(entries, NoScriptError):
            return bool(acquired), await self.window.get_window_stats(quota, *identifiers)
        if isinstance(entries, Exception):
            raise entries
        # The oldest entry still in the window and how many there are (none: empty).
        start, count = (float(entries[0]), int(entries[1])) if entries else (now, 0)
        return bool(acquired), WindowStats(start + expiry, quota.amount - count)

    def _unavailable(self, error: BaseException) -> None:
        # From now: a command to a hung Redis fails only after REDIS_TIMEOUT_SECONDS.
        self.retry_at = monotonic() + RECHECK_SECONDS
        if self.unavailable_since is None:
            self.unavailable_since = monotonic()
            # Once per episode: every request of the outage would say the same.
            logger.warning(
                "rate limits are not checked while Redis is unavailable; "
                "routes that fail closed answer 503",
                extra={"dependency": "redis", "error": repr(error)},
            )


class RateLimitHeadersMiddleware:
    """Adds the check's fields to the answer, whatever produced it (the route, a 429,
    a problem from errors.py): it runs outside the error handling."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_fields(message: Message) -> None:
            if message["type"] == "http.response.start":
                fields = scope.get("state", {}).get(HEADERS)
                if fields:
                    MutableHeaders(scope=message).update(fields)
            await send(message)

        await self.app(scope, receive, send_with_fields)


async def no_subject(_request: Request) -> str | None:
    """Without authentication every caller is its address."""
    return None


def install(
    app: FastAPI,
    *,
    exempt: list[str],
    subject: Callable[[Request], Awaitable[str | None]] = no_subject,
) -> None:
    """Limit every route included from now on, except under the ``exempt`` paths.

    ``subject``: the verified caller's subject, if any (auth.subject).
    """
    exempt_paths = frozenset(exempt)
    exempt_prefixes = tuple(f"{path}/" for path in exempt)

    def is_exempt(path: str) -> bool:
        return path in exempt_paths or path.startswith(exempt_prefixes)

    async def rate_limited(request: Request) -> None:
        if not is_exempt(request.scope["path"]):
            limiter: RateLimiter = request.app.state.rate_limiter
            await limiter.check(request, await subject(request))

    app.router.dependencies.append(Depends(rate_limited))
    app.add_middleware(RateLimitHeadersMiddleware)
    _document(app, is_exempt)


# The fields every answer of a limited route carries, for OpenAPI.
_FIELDS = {
    "RateLimit-Policy": 'The policy: its name, quota, window in seconds ("default";q=100;w=60)',
    "RateLimit": 'What is left of the quota, seconds until it grows ("default";r=42;t=17)',
}


def _document(app: FastAPI, is_exempt: Callable[[str], bool]) -> None:
    """Add the 429 and the fields to every limited operation of the OpenAPI schema."""
    generate = app.openapi
    field_headers = {
        name: {"description": text, "schema": {"type": "string"}} for name, text in _FIELDS.items()
    }

    def openapi() -> dict[str, Any]:
        schema = generate()
        for path, operations in schema.get("paths", {}).items():
            if is_exempt(path):
                continue
            for operation in operations.values():
                responses: dict[str, Any] = operation["responses"]
                responses["429"] = {
                    "description": HTTPStatus.TOO_MANY_REQUESTS.phrase,
                    "content": {PROBLEM_MEDIA_TYPE: {"schema": PROBLEM_REF}},
                    "headers": {
                        "Retry-After": {
                            "description": "Seconds until a request may succeed",
                            "schema": {"type": "integer"},
                        }
                    },
                }
                for response in responses.values():
                    response.setdefault("headers", {}).update(field_headers)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]

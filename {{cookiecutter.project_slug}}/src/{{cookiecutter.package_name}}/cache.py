"""Redis: the client (and its connection pool), its per-request dependency, and what
a client failure means for the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, TimeoutError

from {{ cookiecutter.package_name }}.errors import Dependency
from {{ cookiecutter.package_name }}.settings import Settings


def create_redis(settings: Settings) -> Redis:
    # from_url builds a pool but opens no connection until the first command.
    return Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
        # A pooled connection Redis closed (a restart, its idle timeout) fails its next
        # command: sent once more, on a new connection, rather than answered as an outage
        # (a 503 seconds after Redis is back). Not on a timeout: a hung Redis would cost
        # every caller two.
        retry=Retry(NoBackoff(), 1, supported_errors=(ConnectionError,)),
        decode_responses=True,
    )


async def ping(redis: Redis) -> None:
    if not await redis.ping():
        raise ConnectionError("Redis did not answer PONG")


async def get_redis(request: Request) -> Redis:
    redis: Redis = request.app.state.redis
    return redis


RedisDep = Annotated[Redis, Depends(get_redis)]


def is_unavailable(error: BaseException) -> bool:
    # redis-py wraps every socket failure (refused, reset, DNS, timeout) in its own
    # ConnectionError or TimeoutError; LOADING (BusyLoadingError) and bad credentials
    # (AuthenticationError) are ConnectionErrors too. Other RedisErrors are bugs.
    return isinstance(error, ConnectionError | TimeoutError)


def is_authentication_failure(error: BaseException) -> bool:
    return isinstance(error, AuthenticationError)


FAILURES = Dependency(
    name="redis", unavailable=is_unavailable, misconfigured=is_authentication_failure
)

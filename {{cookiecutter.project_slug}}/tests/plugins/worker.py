"""A worker for the tests: taskiq's receiver in the test's own event loop, on the
test Redis (database 15, flushed after each test) and the test database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import create_broker, create_worker_broker

# The longest a test waits for a job's effect.
JOB_WAIT_SECONDS = 15.0


def pytest_app_settings(request: pytest.FixtureRequest) -> Mapping[str, object]:
    # Retries at once (plus taskiq's jitter, under a second), two attempts in all.
    return {"worker_retry_delay_seconds": 0.0, "worker_max_attempts": 2}


async def close_and_flush(broker: RedisStreamBroker) -> None:
    """Each test starts from empty streams (the queue, its group, the dead letters)."""
    async with Redis(connection_pool=broker.connection_pool) as redis:
        await redis.flushdb()
    await broker.shutdown()


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[RedisStreamBroker]:
    """The app's kind of broker (it enqueues; no worker runs)."""
    broker = create_broker(settings)
    yield broker
    await close_and_flush(broker)


@asynccontextmanager
async def running_worker(settings: Settings) -> AsyncIterator[RedisStreamBroker]:
    """A worker running until the block ends; yields its broker (to enqueue on, inspect)."""
    broker = create_worker_broker(settings)
    assert isinstance(broker, RedisStreamBroker)
    broker.is_worker_process = True
    receiver = Receiver(broker, max_async_tasks=settings.worker_concurrency)
    finish = asyncio.Event()
    listening = asyncio.create_task(receiver.listen(finish))
    try:
        yield broker
    finally:
        finish.set()
        await asyncio.wait_for(listening, JOB_WAIT_SECONDS)
        await close_and_flush(broker)


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[RedisStreamBroker]:
    async with running_worker(settings) as broker:
        yield broker


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait until the worker's effect is seen; fail after JOB_WAIT_SECONDS."""
    async with asyncio.timeout(JOB_WAIT_SECONDS):
        # Polling: the effect is in another store (a database row, a stream), not an event.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)

"""A worker for the tests: taskiq's receiver in the test's own event loop, on the
test Redis (database 15, flushed after each test) and the test database."""

from __future__ import annotations

import asyncio
import os
{%- if cookiecutter.use_metrics %}
import socket
{%- endif %}
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from taskiq.receiver import Receiver
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import create_broker, create_worker_broker

# The longest a test waits for a job's effect.
JOB_WAIT_SECONDS = 15.0
# The longest a worker process may take to import everything (without bytecode caches,
# on a busy machine, it is seconds).
WORKER_START_SECONDS = 120.0


def pytest_app_settings(request: pytest.FixtureRequest) -> Mapping[str, object]:
    # Retries at once (plus taskiq's jitter, under a second), two attempts in all.
    return {
        "worker_retry_delay_seconds": 0.0,
        "worker_max_attempts": 2,
{%- if cookiecutter.use_metrics %}
        # A worker's /metrics on any free port (state.metrics_server.server_port).
        "worker_metrics_port": 0,
{%- endif %}
    }


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
    # No periodic job: the service's own would enqueue into other tests' queue.
    broker = create_worker_broker(settings, schedule=[])
    assert isinstance(broker, RedisStreamBroker)
    broker.is_worker_process = True
    # Started here, not by the receiver's task: the block begins with the worker's
    # resources open (its schedule running{% if cookiecutter.use_metrics %}, its /metrics served{% endif %}).
    await broker.startup()
    receiver = Receiver(broker, max_async_tasks=settings.worker_concurrency, run_startup=False)
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


# A worker process as the container runs it (worker.main), with the jobs of the test
# module named on its command line and that module's SCHEDULE (if any) as its only
# periodic jobs: the service's own would run into the other tests' Redis.
WORKER = """
import importlib, pathlib, sys
from {{ cookiecutter.package_name }} import periodic, worker
for name in worker.JOB_MODULES:
    importlib.import_module(name)
test = importlib.import_module(sys.argv[1])
periodic.SCHEDULE[:] = getattr(test, "SCHEDULE", [])
pathlib.Path(sys.argv[2]).touch()  # imported: it listens within a moment
worker.main([])
"""


@contextmanager
def start_worker(
    settings: Settings, module: str, **environment: str
) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m ...worker`` on the test Redis, running the jobs of ``module``; the
    block starts once the process has imported everything."""
    env = {
        **os.environ,
        "ENVIRONMENT": "test",
        # The test Redis; the database the worker would open lazily is not used here.
        "REDIS_URL": settings.redis_url,
        "LOG_LEVEL": "WARNING",
{%- if cookiecutter.use_metrics %}
        "WORKER_METRICS_PORT": str(free_port()),
{%- endif %}
        **environment,
    }
    # Imports compiled once and cached: the next worker process starts in a moment.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
{%- if cookiecutter.use_metrics %}
    # The worker empties its metrics directory at start: only one the test gave it.
    if "PROMETHEUS_MULTIPROC_DIR" not in environment:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
{%- endif %}
    with tempfile.TemporaryDirectory() as directory:
        ready = Path(directory) / "ready"
        command = [sys.executable, "-c", WORKER, module, str(ready)]
        process = subprocess.Popen(command, env=env)  # noqa: S603
        try:
            deadline = time.monotonic() + WORKER_START_SECONDS
            # Polling: the signal is a file the process touches.
            while not ready.exists():
                assert process.poll() is None, "the worker process exited at start"
                assert time.monotonic() < deadline, "the worker process did not start"
                time.sleep(0.05)
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=JOB_WAIT_SECONDS)

{%- if cookiecutter.use_metrics %}


def free_port() -> int:
    """A port free now, for a worker process's /metrics."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
{%- endif %}

"""The worker as the container runs it (``python -m {{ cookiecutter.package_name }}.worker``):
SIGTERM lets the job in hand finish; ``kill -9`` mid-job leaves it to another worker,
which runs it to its end once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from redis.asyncio import Redis
from taskiq import async_shared_broker
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import CONSUMER_GROUP, QUEUE
from tests.plugins import worker as plugin
from tests.plugins.worker import JOB_WAIT_SECONDS, eventually

pytestmark = pytest.mark.services


def note(path: str, line: str) -> None:
    with Path(path).open("a") as trace:
        trace.write(f"{line}\n")


@async_shared_broker.task(task_name="tests.slow")
async def slow(path: str, seconds: float) -> None:
    """Writes "started", waits, writes "done": each line a trace of one run."""
    note(path, "started")
    await asyncio.sleep(seconds)
    note(path, "done")


@contextmanager
def start_worker(settings: Settings, **environment: str) -> Iterator[subprocess.Popen[bytes]]:
    # The worker process imports this module: the job above is its.
    with plugin.start_worker(settings, __name__, **environment) as process:
        yield process


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def pending(broker: RedisStreamBroker) -> int:
    async with Redis(connection_pool=broker.connection_pool) as redis:
        summary = await redis.xpending(QUEUE, CONSUMER_GROUP)
    return int(summary["pending"])


async def test_sigterm_lets_the_job_in_hand_finish(
    broker: RedisStreamBroker, settings: Settings, tmp_path: Path
) -> None:
    trace = tmp_path / "trace"
    await slow.kicker().with_broker(broker).kiq(str(trace), 1.0)
    with start_worker(settings, GRACEFUL_TIMEOUT_SECONDS="10") as worker:

        async def started() -> bool:
            return lines(trace) == ["started"]

        await eventually(started)
        worker.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(worker.wait, JOB_WAIT_SECONDS) == 0
    assert lines(trace) == ["started", "done"]
    assert await pending(broker) == 0  # acknowledged before the worker exited


async def test_a_job_whose_worker_was_killed_runs_to_its_end_once_on_another(
    broker: RedisStreamBroker, settings: Settings, tmp_path: Path
) -> None:
    trace, nudge = tmp_path / "trace", tmp_path / "nudge"
    await slow.kicker().with_broker(broker).kiq(str(trace), 1.0)
    with start_worker(settings) as first:

        async def started() -> bool:
            return lines(trace) == ["started"]

        await eventually(started)
        first.send_signal(signal.SIGKILL)
        await asyncio.to_thread(first.wait, JOB_WAIT_SECONDS)
    assert await pending(broker) == 1  # taken, never acknowledged
    with start_worker(settings, WORKER_REDELIVERY_SECONDS="0.5"):
        # taskiq-redis looks for abandoned jobs after a read that brought a new one.
        await asyncio.sleep(0.5)
        await slow.kicker().with_broker(broker).kiq(str(nudge), 0.0)

        async def finished() -> bool:
            return lines(trace)[-1:] == ["done"] and await pending(broker) == 0

        await eventually(finished)
    assert lines(trace) == ["started", "started", "done"]  # run again; its effect once

"""Periodic jobs: two worker processes each run the schedule; each tick runs once."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from taskiq import Context, TaskiqDepends, async_shared_broker
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.periodic import Periodic, enqueue_once
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import QUEUE
from tests.plugins.worker import JOB_WAIT_SECONDS, eventually, start_worker

pytestmark = pytest.mark.services

TICK_SECONDS = 0.4
TICKS = 8


@async_shared_broker.task(task_name="tests.record_tick")
async def record_tick(context: Context = TaskiqDepends()) -> None:  # noqa: B008 (taskiq's form)
    """Appends the tick it was enqueued for to the file the test gave the workers."""
    note(Path(os.environ["TICKS_FILE"]), str(context.message.labels["tick"]))


def note(path: Path, line: str) -> None:
    with path.open("a") as lines:
        lines.write(f"{line}\n")


# The worker processes' schedule (see tests.plugins.worker.start_worker).
SCHEDULE = [Periodic(record_tick, TICK_SECONDS)]


def ticks(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_two_workers_run_each_tick_once(
    settings: Settings, tmp_path: Path, broker: RedisStreamBroker
) -> None:
    # `broker` empties Redis afterwards (the queue, the tick keys).
    path = tmp_path / "ticks"
    with (
        start_worker(settings, __name__, TICKS_FILE=str(path)) as first,
        start_worker(settings, __name__, TICKS_FILE=str(path)) as second,
    ):
        # Both workers run the schedule from here on.
        before = len(ticks(path))

        async def ticked() -> bool:
            return len(ticks(path)) >= before + TICKS

        await eventually(ticked)
        for worker in (first, second):
            worker.send_signal(signal.SIGTERM)
        for worker in (first, second):
            assert await asyncio.to_thread(worker.wait, JOB_WAIT_SECONDS) == 0
    runs = Counter(ticks(path))
    assert [tick for tick, count in runs.items() if count > 1] == []
    # No tick skipped between the first and the last (each worker's first tick may come
    # before the other started: still once).
    assert sorted(runs) == list(range(min(runs), max(runs) + 1))


async def test_a_tick_is_enqueued_by_the_first_worker_to_take_it(
    broker: RedisStreamBroker,
) -> None:
    entry = Periodic(record_tick, 60)
    assert [await enqueue_once(broker, entry, tick) for tick in (7, 7, 8)] == [True, False, True]
    async with Redis(connection_pool=broker.connection_pool) as redis:
        # The broker's pool does not decode: ids and fields are bytes.
        queued = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(QUEUE))
    labels = [broker.formatter.loads(fields[b"data"]).labels for _, fields in queued]
    assert [label["tick"] for label in labels] == ["7", "8"]  # labels travel as text

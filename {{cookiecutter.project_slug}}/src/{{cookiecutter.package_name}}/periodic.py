"""Periodic jobs: each is enqueued once per tick of its interval, however many workers run.

Every worker runs the schedule, so there is no scheduler process (nor Deployment) to
keep alive. At each tick every worker tries to take the tick's key in Redis (SET NX);
the one that took it enqueues the job, which then runs on any worker like every other
job (retries, dead letters). Ticks are counted from the Unix epoch, so workers
agree on them whatever their start time; a worker whose clock is off by less than the
key's life still finds the tick taken. A worker killed between taking a tick and
enqueueing its job loses that tick's run: a periodic job must catch up at its next one
(the example in jobs.py does).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from taskiq import AsyncTaskiqDecoratedTask, TaskiqState
from taskiq_redis import RedisStreamBroker

logger = logging.getLogger(__name__)

# The tick keys outlive their tick by this much at least: the clock skew tolerated.
MIN_KEY_SECONDS = 60.0

Job = TypeVar("Job", bound=AsyncTaskiqDecoratedTask[Any, Any])


@dataclass(frozen=True)
class Periodic:
    job: AsyncTaskiqDecoratedTask[Any, Any]
    seconds: float


# Filled by every() as the job modules (worker.JOB_MODULES) are imported.
SCHEDULE: list[Periodic] = []


def every(seconds: float) -> Callable[[Job], Job]:
    """Run the decorated job (it takes no argument) every this many seconds."""

    def register(job: Job) -> Job:
        SCHEDULE.append(Periodic(job, seconds))
        return job

    return register


async def enqueue_once(broker: RedisStreamBroker, entry: Periodic, tick: int) -> bool:
    """Enqueue the tick's run unless another worker did; whether this one did."""
    key = f"jobs:tick:{entry.job.task_name}:{tick}"
    life = round(max(2 * entry.seconds, MIN_KEY_SECONDS) * 1000)
    async with Redis(connection_pool=broker.connection_pool) as redis:
        if not await redis.set(key, 1, nx=True, px=life):
            return False
        try:
            await entry.job.kicker().with_broker(broker).with_labels(tick=tick).kiq()
        except BaseException:
            # Not enqueued: let another worker (or this one, next time) take the tick.
            await redis.delete(key)
            raise
    return True


async def run_every(broker: RedisStreamBroker, entry: Periodic) -> None:
    """The job's ticks, until cancelled; a tick missed while Redis was away is skipped."""
    tick = int(time.time() // entry.seconds) + 1
    while True:
        await asyncio.sleep(max(tick * entry.seconds - time.time(), 0))
        try:
            await enqueue_once(broker, entry, tick)
        except Exception:
            logger.exception("periodic job not enqueued", extra={"job": entry.job.task_name})
        tick = max(tick + 1, int(time.time() // entry.seconds) + 1)


async def start(
    broker: RedisStreamBroker, schedule: Sequence[Periodic], state: TaskiqState
) -> None:
    """taskiq's worker startup: the schedule runs in the worker's event loop."""
    state.schedule = [asyncio.create_task(run_every(broker, entry)) for entry in schedule]


async def stop(state: TaskiqState) -> None:
    for task in state.schedule:
        task.cancel()
    await asyncio.gather(*state.schedule, return_exceptions=True)

"""The background jobs' benchmark, run in the service's image (a use_worker bake).

Mounted read-only as /bench/bench_jobs.py by bench/compose.bench-worker.yaml; it
imports only what the image already has. Three roles:

- ``service-worker``: the service's own worker process (``<package>.worker``: its
  broker settings, middlewares, JSON logs), with a no-op job beside the service's;
- ``bare_broker``: the ceiling, given to taskiq's own CLI (``taskiq worker``, one
  process): taskiq-redis's ``RedisStreamBroker`` at its defaults on its own stream of
  the same Redis, no middleware, the same no-op job;
- ``drive JOBS ROUNDS ENQUEUES``: queues JOBS no-op jobs at once for one worker, then
  the other (alternating), and times each until its consumer group has every job
  acknowledged; then times ENQUEUES enqueues (``kiq``) through each broker. Prints JSON.

The no-op job leaves what the worker costs per job: reading, decoding, middlewares,
logging, acknowledging. The harness times nothing here; this prints, the harness reports.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

from redis.asyncio import Redis
from taskiq import AsyncBroker, TaskiqMessage, async_shared_broker
from taskiq_redis import RedisStreamBroker

NOOP = "bench_noop"
BARE_QUEUE, BARE_GROUP = "bench:bare", "bench"


@async_shared_broker.task(task_name=NOOP)
async def noop() -> None:
    """Nothing: what remains is the worker's own cost per job."""


def bare_broker() -> AsyncBroker:
    """taskiq's CLI calls this factory: the bare broker with the no-op job."""
    broker = RedisStreamBroker(
        os.environ["REDIS_URL"], queue_name=BARE_QUEUE, consumer_group_name=BARE_GROUP
    )
    broker.register_task(noop.original_func, task_name=NOOP)
    return broker


def service_worker() -> None:
    worker = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.worker")
    worker.JOB_MODULES.append("bench_jobs")  # this file, as the worker imports it
    worker.main([])


async def idle_group(redis: Redis, stream: str, group: str) -> bool:
    """Whether the group has a consumer and every job queued is read and acknowledged."""
    try:
        groups = await redis.xinfo_groups(stream)
    except Exception:  # no stream yet: the worker has not started
        return False
    found = [g for g in groups if g["name"] == group]
    return (
        bool(found)
        and found[0]["consumers"] > 0
        and found[0]["pending"] == 0
        and found[0]["lag"] == 0
    )


async def wait_idle(redis: Redis, stream: str, group: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await idle_group(redis, stream, group):
        if time.monotonic() > deadline:
            raise SystemExit(f"{stream}: the worker did not join or finish within {timeout:.0f} s")
        await asyncio.sleep(0.005)


def message(broker: AsyncBroker) -> bytes:
    built = TaskiqMessage(
        task_id=uuid.uuid4().hex, task_name=NOOP, labels={}, labels_types={}, args=[], kwargs={}
    )
    return broker.formatter.dumps(built).message


async def drain_seconds(
    redis: Redis, broker: AsyncBroker, stream: str, group: str, jobs: int
) -> float:
    """Queue the jobs in one pipeline and time them until all are acknowledged."""
    await wait_idle(redis, stream, group, timeout=120)
    payloads = [message(broker) for _ in range(jobs)]
    started = time.perf_counter()
    async with redis.pipeline(transaction=False) as pipe:
        for payload in payloads:
            pipe.xadd(stream, {b"data": payload})
        await pipe.execute()
    await wait_idle(redis, stream, group, timeout=300)
    return time.perf_counter() - started


def warmups(enqueues: int) -> int:
    """Enqueues before the timed ones, per broker: connections opened, code warm."""
    return enqueues // 10


async def enqueue_us(brokers: dict[str, AsyncBroker], enqueues: int) -> dict[str, list[float]]:
    """Microseconds per kiq through each broker, one after another as a route enqueues,
    the brokers taking turns so that both meet the same load (the workers run them)."""
    kickers = {name: noop.kicker().with_broker(broker) for name, broker in brokers.items()}
    samples: dict[str, list[float]] = {name: [] for name in brokers}
    for index in range(warmups(enqueues) + enqueues):
        for name, kicker in sorted(kickers.items(), reverse=index % 2 == 1):
            started = time.perf_counter()
            await kicker.kiq()
            if index >= warmups(enqueues):
                samples[name].append((time.perf_counter() - started) * 1e6)
    return samples


def percentiles(samples: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(samples, n=100)
    return {"p50_us": statistics.median(samples), "p99_us": cuts[98]}


async def drive(jobs: int, rounds: int, enqueues: int) -> dict[str, Any]:
    worker = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.worker")
    settings = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.settings").Settings()
    brokers = {"service": worker.create_broker(settings), "bare": bare_broker()}
    streams = {"service": (worker.QUEUE, worker.CONSUMER_GROUP), "bare": (BARE_QUEUE, BARE_GROUP)}
    seconds: dict[str, list[float]] = {"service": [], "bare": []}
    async with Redis.from_url(os.environ["REDIS_URL"], decode_responses=True) as redis:
        for index in range(rounds):
            order = ["service", "bare"] if index % 2 == 0 else ["bare", "service"]
            for name in order:
                stream, group = streams[name]
                seconds[name].append(await drain_seconds(redis, brokers[name], stream, group, jobs))
        samples = await enqueue_us(brokers, enqueues)
        enqueue = {name: percentiles(us) for name, us in samples.items()}
        for stream, group in streams.values():  # the enqueued no-ops run, then stop
            await wait_idle(redis, stream, group, timeout=120)
    for broker in brokers.values():
        await broker.shutdown()
    return {
        "jobs": jobs,
        "rounds": rounds,
        "enqueues": enqueues,
        # Every job each worker ran in this drive, all no-ops: its CPU divides by this.
        "jobs_run": jobs * rounds + warmups(enqueues) + enqueues,
        "seconds": seconds,
        "jobs_per_second": {name: jobs / statistics.median(s) for name, s in seconds.items()},
        "enqueue": enqueue,
    }


if __name__ == "__main__":
    role = sys.argv[1:2]
    if role == ["service-worker"]:
        service_worker()
    elif role == ["drive"]:
        print(json.dumps(asyncio.run(drive(*map(int, sys.argv[2:5])))))
    else:
        sys.exit("usage: bench_jobs.py service-worker | drive JOBS ROUNDS ENQUEUES")

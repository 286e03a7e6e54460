"""The jobs' metrics: the app counts what it enqueues, each worker what it runs (on its own
/metrics), and the scraped totals of two worker processes are exact."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from httpx import AsyncClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from taskiq import async_shared_broker
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.metrics_worker import QueueDepth
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import DEAD_LETTERS, QUEUE
from tests.plugins.worker import (
    JOB_WAIT_SECONDS,
    eventually,
    free_port,
    running_worker,
    start_worker,
)

from .test_metrics import Samples, scrape

pytestmark = pytest.mark.services

JOB = (("job", "tests.counted"),)


@async_shared_broker.task(task_name="tests.counted")
async def counted(fail: bool) -> None:
    if fail:
        raise RuntimeError("counted to fail")


async def scrape_worker(port: int) -> Samples:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def total(
    scrapes: Iterable[Samples], name: str, labels: tuple[tuple[str, str], ...] = JOB
) -> float:
    return sum(samples.get((name, labels), 0.0) for samples in scrapes)


async def test_the_app_counts_the_jobs_it_enqueues(app: FastAPI, client: AsyncClient) -> None:
    @app.post("/test/enqueue")
    async def enqueue(request: Request) -> None:
        await counted.kicker().with_broker(request.app.state.broker).kiq(False)

    before = total([await scrape(client)], "jobs_enqueued_total")
    for _ in range(3):
        assert (await client.post("/test/enqueue")).status_code == 200
    assert total([await scrape(client)], "jobs_enqueued_total") == before + 3


async def test_a_worker_serves_its_runs_and_the_queue_depth(
    broker: RedisStreamBroker, settings: Settings
) -> None:
    for _ in range(3):
        await counted.kicker().with_broker(broker).kiq(False)
    depth = QueueDepth(settings.redis_url, 1.0, QUEUE, DEAD_LETTERS)
    # Enqueued before any worker (and its consumer group) existed: all three wait.
    assert gauges(depth) == {"jobs_queued": 3, "jobs_pending": 0, "jobs_dead_letters": 0}
    # The counters live in this process (the app's and the in-process worker's alike).
    before = {name: counts(name) for name in ("jobs_started_total", "jobs_succeeded_total")}
    async with running_worker(settings) as worker:
        port = worker.state.metrics_server.server_port

        async def drained() -> bool:
            return gauges(depth)["jobs_queued"] == gauges(depth)["jobs_pending"] == 0

        await eventually(drained)
        samples = await scrape_worker(port)
    for name, count in before.items():
        assert total([samples], name) == count + 3
    assert samples[("jobs_queued", ())] == 0


def counts(name: str) -> float:
    return REGISTRY.get_sample_value(name, dict(JOB)) or 0.0


def gauges(depth: QueueDepth) -> dict[str, float]:
    return {metric.name: metric.samples[0].value for metric in depth.collect()}


async def test_two_worker_processes_count_every_run_once(
    broker: RedisStreamBroker, settings: Settings, tmp_path: Path
) -> None:
    succeeding, failing = 20, 3
    ports = [free_port(), free_port()]
    # Three attempts: a failing job is retried twice, then fails once for good.
    environment = {"WORKER_MAX_ATTEMPTS": "3", "WORKER_RETRY_DELAY_SECONDS": "0"}
    with (
        # Each in a metrics directory of its own, as each container has (the image sets one).
        start_worker(
            settings,
            __name__,
            WORKER_METRICS_PORT=str(ports[0]),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "first"),
            **environment,
        ) as first,
        start_worker(
            settings,
            __name__,
            WORKER_METRICS_PORT=str(ports[1]),
            PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "second"),
            **environment,
        ) as second,
    ):
        for fail in [False] * succeeding + [True] * failing:
            await counted.kicker().with_broker(broker).kiq(fail)

        async def drained() -> bool:
            try:
                samples = await scrape_worker(ports[0])
            except httpx.TransportError:  # not listening yet
                return False
            # Acknowledged only after post_execute counted it (taskiq's WHEN_SAVED): an
            # empty queue with nothing pending means every run has been counted.
            return (
                samples[("jobs_queued", ())] == 0
                and samples[("jobs_pending", ())] == 0
                and samples[("jobs_dead_letters", ())] == failing
            )

        await eventually(drained)
        scrapes = [await scrape_worker(port) for port in ports]
        for worker in (first, second):
            worker.send_signal(signal.SIGTERM)
        for worker in (first, second):
            assert await asyncio.to_thread(worker.wait, JOB_WAIT_SECONDS) == 0
    runs = succeeding + 3 * failing
    assert total(scrapes, "jobs_started_total") == runs
    assert total(scrapes, "jobs_succeeded_total") == succeeding
    assert total(scrapes, "jobs_retried_total") == 2 * failing
    assert total(scrapes, "jobs_failed_total") == failing
    assert total(scrapes, "jobs_enqueued_total") == 0  # the test enqueued, not the workers
    durations = sum(
        total(scrapes, "jobs_duration_seconds_count", (("job", "tests.counted"), ("outcome", o)))
        for o in ("succeeded", "retried", "failed")
    )
    assert durations == runs
    for samples in scrapes:  # Redis' figures, the same from each worker
        assert samples[("jobs_queued", ())] == 0
        assert samples[("jobs_pending", ())] == 0
        assert samples[("jobs_dead_letters", ())] == failing

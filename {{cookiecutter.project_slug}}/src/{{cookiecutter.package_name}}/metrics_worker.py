"""Prometheus metrics of the background jobs, counted where each thing happens.

The app counts the jobs it enqueues: they appear on its /metrics, added up over its
processes like the request metrics (metrics.py). A worker counts the runs it makes and
serves them itself, on WORKER_METRICS_PORT: it runs no web server, and Prometheus
scrapes each worker (one process per container or pod) like each app replica, so the
sum over the scraped workers is the service's total. The queue's depth is read from
Redis at each scrape: every worker reports the same figure (take the max, not the sum).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable
from contextvars import ContextVar
from pathlib import Path
from threading import Thread
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

logger = logging.getLogger(__name__)

# Labelled by the job's name: a bounded set, the jobs the code declares.
ENQUEUED = Counter("jobs_enqueued", "Jobs enqueued (their retries not included)", ["job"])
STARTED = Counter("jobs_started", "Runs of jobs started, each attempt one", ["job"])
SUCCEEDED = Counter("jobs_succeeded", "Runs of jobs that succeeded", ["job"])
RETRIED = Counter("jobs_retried", "Runs of jobs that failed and were enqueued again", ["job"])
FAILED = Counter(
    "jobs_failed", "Jobs that failed for good: dead-lettered after their last run", ["job"]
)
DURATION = Histogram(
    "jobs_duration_seconds",
    "Time one run of a job took, by outcome: succeeded, retried or failed",
    ["job", "outcome"],
)

started_var: ContextVar[float] = ContextVar("job_metrics_started", default=0.0)


def outcome_of(result: TaskiqResult[Any]) -> str:
    """What became of a run. post_execute comes after on_error, whose retry marks the
    result NoResultError (taskiq's SmartRetryMiddleware) when it enqueued the next try."""
    if not result.is_err:
        return "succeeded"
    return "retried" if isinstance(result.error, NoResultError) else "failed"


class JobMetrics(TaskiqMiddleware):
    """Counts jobs as they are enqueued (in the app) and run (in the worker)."""

    def post_send(self, message: TaskiqMessage) -> None:
        # After the send: a job Redis refused is not counted. A retry is sent by the
        # worker with its attempt label, and counted as retried instead.
        if "_retries" not in message.labels:
            ENQUEUED.labels(message.task_name).inc()

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        # Each job runs in an asyncio task of its own: this start is that job's only.
        started_var.set(time.perf_counter())
        STARTED.labels(message.task_name).inc()
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        outcome = outcome_of(result)
        counter = {"succeeded": SUCCEEDED, "retried": RETRIED, "failed": FAILED}[outcome]
        counter.labels(message.task_name).inc()
        elapsed = time.perf_counter() - started_var.get()
        DURATION.labels(message.task_name, outcome).observe(elapsed)


class QueueDepth(Collector):
    """The queue as Redis has it, read at each scrape (XINFO GROUPS, XLEN)."""

    def __init__(self, redis_url: str, timeout: float, queue: str, dead_letters: str) -> None:
        # A client of its own, blocking: the exposition server calls collect() in its thread.
        self.redis = Redis.from_url(
            redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self.queue, self.dead_letters = queue, dead_letters

    def collect(self) -> Iterable[Metric]:
        try:
            length = self.redis.xlen(self.queue)
            groups = self.redis.xinfo_groups(self.queue) if length else []
            dead = self.redis.xlen(self.dead_letters)
        except RedisError as error:
            # A scrape still answers (with the run counts); the gap says Redis was away.
            logger.warning("queue depth unavailable", extra={"error": repr(error)})
            return
        queued = GaugeMetricFamily(
            "jobs_queued", "Jobs waiting in the queue, not yet taken by a worker"
        )
        in_hand = GaugeMetricFamily(
            "jobs_pending", "Jobs taken by a worker and not acknowledged yet (running, or lost)"
        )
        # The workers' group reads the stream from its start: until the first worker
        # made it, every entry waits. Its "lag" is unknown only after entries were
        # deleted from the stream, which nothing here does.
        [group] = groups or [{"lag": length, "pending": 0}]
        queued.add_metric([], int(group["lag"] or 0))
        in_hand.add_metric([], int(group["pending"]))
        yield queued
        yield in_hand
        yield GaugeMetricFamily("jobs_dead_letters", "Jobs in the dead letters", value=dead)


def reset_multiprocess_dir() -> None:
    """Start a worker with no counts of an earlier process, as the app's server starts:
    a restarted container finds the files its last run left in /dev/shm."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True)


def serve(port: int, queue_depth: QueueDepth) -> tuple[WSGIServer, Thread]:
    """The worker's /metrics (any path answers), in a thread of prometheus_client's.

    The image sets PROMETHEUS_MULTIPROC_DIR: the counts are then in files there, read
    back by MultiProcessCollector (this process's only: the worker is alone in its
    container). Without it (tests, a run on the host) they are in this process's memory.
    """
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # unannotated upstream
    else:
        for metric in (ENQUEUED, STARTED, SUCCEEDED, RETRIED, FAILED, DURATION):
            registry.register(metric)
    registry.register(queue_depth)
    return start_http_server(port, registry=registry)

"""Background jobs: the broker both sides share, the worker process, the dead letters.

``python -m {{ cookiecutter.package_name }}.worker`` runs a worker (the compose service
``worker``); with ``replay`` it sends every dead letter back to the queue, with ``health``
it is the container's health check. Jobs are taskiq tasks declared on
``async_shared_broker`` (see jobs.py{% if not cookiecutter.include_example_api %}, once there is one{% endif %}), so declaring one needs no
settings; the app and the worker each build the real broker from theirs.

Delivery is at least once: a job is acknowledged only after it ran, and one whose worker
died is handed to another after WORKER_REDELIVERY_SECONDS. A job must therefore be
idempotent (running it twice is harmless).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
import time
from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from functools import partial
from typing import Annotated, Any, cast

from fastapi import Depends, Request
{%- if cookiecutter.use_tracing %}
from opentelemetry.sdk.trace import TracerProvider
{%- endif %}
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from taskiq import (
    AckableMessage,
    AsyncBroker,
    TaskiqEvents,
    TaskiqMessage,
    TaskiqMiddleware,
    TaskiqResult,
    TaskiqState,
)
from taskiq.cli.worker.args import WorkerArgs
from taskiq.cli.worker.run import start_listen
from taskiq.exceptions import NoResultError, SendTaskError
from taskiq.middlewares import SmartRetryMiddleware
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }} import cache{% if cookiecutter.use_postgres %}, db{% endif %}{% if cookiecutter.use_metrics %}, metrics_worker{% endif %}, periodic{% if cookiecutter.use_tracing %}, tracing, tracing_worker{% endif %}{% if cookiecutter.use_kubernetes %}, worker_liveness{% endif %}
from {{ cookiecutter.package_name }}.errors import Dependency
from {{ cookiecutter.package_name }}.logging_config import configure_logging, request_id_var
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

logger = logging.getLogger(__name__)

# The stream the jobs wait in, its consumer group (every worker is in it: each job goes
# to one of them) and the stream of the jobs that failed for good.
QUEUE = "jobs"
CONSUMER_GROUP = "workers"
DEAD_LETTERS = "jobs:dead"
# The modules whose jobs a worker runs: a job in a module not listed here is never found.
JOB_MODULES: list[str] = [{% if cookiecutter.include_example_api %}"{{ cookiecutter.package_name }}.jobs"{% endif %}]
# How long one read of the stream waits for a job, in milliseconds.
READ_BLOCK_MS = 1000
# How long a worker waits before reading again after Redis failed to answer.
READ_RETRY_SECONDS = 1.0
# Redis refusing or not answering. Named: ruff formats an unnamed tuple in an except
# clause differently for Python 3.14 (PEP 758).
REDIS_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError)

# The job being run, for the log lines it writes (see JobLogFilter), and when it started.
job_var: ContextVar[tuple[str, str] | None] = ContextVar("job", default=None)
started_var: ContextVar[float] = ContextVar("job_started", default=0.0)


class PermanentJobError(Exception):
    """Raised by a job that retrying cannot help (bad input): dead-lettered at once."""


class ReconnectingStreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, whose reading outlives a Redis outage.

    Its own listen() ends at the first connection error, and the worker process with it
    (a traceback, then a restart by Docker or Kubernetes, backing off). Here the worker
    reads again every second until Redis is back. A job whose read or acknowledgement
    was lost is still pending in the group: redelivered after WORKER_REDELIVERY_SECONDS.
    """

    async def listen(self) -> AsyncGenerator[AckableMessage]:
        while True:
            try:
                async for message in super().listen():
                    yield message
            except REDIS_UNAVAILABLE as error:
                logger.warning(
                    "redis unavailable: reading again in a moment",
                    extra={"error": repr(error), "retry_seconds": READ_RETRY_SECONDS},
                )
                await asyncio.sleep(READ_RETRY_SECONDS)


def create_broker(
    settings: Settings,
    consumer_name: str | None = None,
{%- if cookiecutter.use_tracing %}
    tracer_provider: TracerProvider | None = None,
{%- endif %}
) -> RedisStreamBroker:
    """The broker on REDIS_URL. Connects on first use: building it needs no Redis."""
    broker = ReconnectingStreamBroker(
        settings.redis_url,
        queue_name=QUEUE,
        consumer_group_name=CONSUMER_GROUP,
        consumer_name=consumer_name,
        # The group reads the stream from its start, not from "now" (taskiq's default):
        # jobs enqueued before the first worker ever started are run too.
        consumer_id="0",
        xread_block=READ_BLOCK_MS,
        # One job per read, read when a slot is free (max_prefetch=0 in main): a job a
        # worker has read is pending on it, so a stopping worker leaves for redelivery only
        # the one it read last (and those it had just reclaimed from a dead worker, up to
        # 100 a time), and the queued jobs go to workers with free slots.
        xread_count=1,
        idle_timeout=round(settings.worker_redelivery_seconds * 1000),
        # unacknowledged_lock_timeout stays unset: the lock is taken, used and released in
        # one MULTI transaction, so no crash can leave it held (and with a timeout set,
        # taskiq-redis 1.2.4's reclaim stalled the worker's reads in our tests).
        # redis-py's pool: how long to connect, to wait for a command (longer than a
        # blocking read) and for a free connection. A failed enqueue is then a 503 from
        # the route (FAILURES below).
        socket_connect_timeout=settings.redis_timeout_seconds,
        socket_timeout=settings.redis_timeout_seconds + READ_BLOCK_MS / 1000,
        timeout=settings.redis_timeout_seconds,
        # A pooled connection that Redis closed while it sat idle (a restart) is replaced
        # and the command sent again, once: otherwise the first enqueue after an outage
        # is a 503. Not on a timeout: a hung Redis costs a route one timeout, not two.
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
    )
    # In this order: a retry waits out its delay before its run is logged as started.
    return broker.with_middlewares(
        RetryThenDeadLetter(
            default_retry_count=settings.worker_max_attempts,
            default_retry_label=True,
            default_delay=settings.worker_retry_delay_seconds,
            use_jitter=True,
            use_delay_exponent=True,
            max_delay_exponent=settings.worker_retry_max_delay_seconds,
        ),
{%- if cookiecutter.use_tracing %}
        # The job's span is current before "job started" is logged: the line carries it.
        tracing_worker.JobTracing(tracer_provider),
{%- endif %}
        RequestContextMiddleware(),
{%- if cookiecutter.use_metrics %}
        # Counts a run once its retry delay is over, and its outcome once the retry
        # decided (taskiq calls post_execute after every on_error).
        metrics_worker.JobMetrics(),
{%- endif %}
    )


def _redis_cause(error: BaseException) -> BaseException | None:
    # taskiq wraps the Redis error of a failed enqueue in its SendTaskError.
    return error.__cause__ if isinstance(error, SendTaskError) else None


def is_unavailable(error: BaseException) -> bool:
    cause = _redis_cause(error)
    return cause is not None and cache.is_unavailable(cause)


def is_misconfigured(error: BaseException) -> bool:
    cause = _redis_cause(error)
    return cause is not None and cache.is_authentication_failure(cause)


# A job that could not be enqueued: Redis is down (503), like any other Redis failure.
FAILURES = Dependency(name="redis", unavailable=is_unavailable, misconfigured=is_misconfigured)


async def get_broker(request: Request) -> AsyncBroker:
    broker: AsyncBroker = request.app.state.broker
    return broker


BrokerDep = Annotated[AsyncBroker, Depends(get_broker)]


class RequestContextMiddleware(TaskiqMiddleware):
    """Carries the enqueuing request's id into the job, and logs each run with its outcome."""

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        request_id = request_id_var.get()
        if request_id is not None:
            message.labels.setdefault("request_id", request_id)
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        # Each job runs in an asyncio task of its own: these values are that job's only.
        request_id_var.set(message.labels.get("request_id"))
        job_var.set((message.task_id, message.task_name))
        started_var.set(time.monotonic())
        logger.info("job started", extra={"attempt": attempt_of(message)})
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        duration = round(time.monotonic() - started_var.get(), 6)
        if result.is_err:
            logger.warning(
                "job failed",
                extra={"attempt": attempt_of(message), "duration_seconds": duration},
            )
        else:
            logger.info("job succeeded", extra={"duration_seconds": duration})


def attempt_of(message: TaskiqMessage) -> int:
    return int(message.labels.get("_retries", 0)) + 1


class RetryThenDeadLetter(SmartRetryMiddleware):
    """taskiq's retries, with their delay honoured, then the dead letters.

    SmartRetryMiddleware enqueues the retry at once with the delay as a label, for a
    scheduler to honour; with no scheduler, the worker that takes the retry waits it out
    here. The failed run is acknowledged only after its retry (or its dead letter) is
    in Redis: a worker that dies in between leaves it to be redelivered, never lost.
    """

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if "_retries" in message.labels:
            await asyncio.sleep(float(message.labels.get("delay", 0)))
        return message

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        if not isinstance(exception, PermanentJobError):
            await super().on_error(message, result, exception)
        # Retried: the parent marks this run's result NoResultError. Otherwise it was the last.
        if not isinstance(result.error, NoResultError):
            await self.dead_letter(message, exception)

    async def dead_letter(self, message: TaskiqMessage, exception: BaseException) -> None:
        broker = self.broker
        assert isinstance(broker, RedisStreamBroker)  # noqa: S101 (create_broker's own)
        payload = broker.formatter.dumps(message).message
        async with Redis(connection_pool=broker.connection_pool) as redis:
            await redis.xadd(
                DEAD_LETTERS,
                {
                    "message": payload,
                    "job": message.task_name,
                    "job_id": message.task_id,
                    "attempts": attempt_of(message),
                    "error": f"{type(exception).__name__}: {exception}",
                },
            )
        logger.error(
            "job dead-lettered",
            extra={"attempt": attempt_of(message), "error": repr(exception)},
        )


class JobLogFilter(logging.Filter):
    """Adds the running job's id and name to every log line written while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = job_var.get()
        if job is not None:
            record.job_id, record.job_name = job
        return True


async def replay_dead_letters(broker: RedisStreamBroker) -> int:
    """Send every dead letter back to the queue as a first attempt; how many were sent.

    Each is moved in one MULTI transaction (queued, then removed from the dead letters):
    a replay cut short leaves every letter in exactly one of the two streams.
    """
    replayed = 0
    async with Redis(connection_pool=broker.connection_pool) as redis:
        # The broker's pool does not decode: ids and fields are bytes.
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(DEAD_LETTERS))
        for entry_id, fields in entries:
            message = broker.formatter.loads(fields[b"message"])
            for label in ("_retries", "delay"):
                message.labels.pop(label, None)
            async with redis.pipeline(transaction=True) as pipe:
                pipe.xadd(QUEUE, {b"data": broker.formatter.dumps(message).message})
                pipe.xdel(DEAD_LETTERS, entry_id)
                await pipe.execute()
            replayed += 1
    return replayed


async def has_joined(broker: RedisStreamBroker, consumer: str) -> bool:
    """Whether the consumer is in the group: its worker started and read from Redis."""
    async with Redis(connection_pool=broker.connection_pool) as redis:
        try:
            consumers = await redis.xinfo_consumers(QUEUE, CONSUMER_GROUP)
        except ResponseError:  # no stream or no group yet: no worker has started
            return False
    return any(entry["name"] == consumer.encode() for entry in consumers)


async def open_worker_resources(state: TaskiqState) -> None:
    """What the jobs use, opened once per worker process (taskiq's worker startup)."""
    settings: Settings = state.settings
{%- if cookiecutter.use_postgres %}
    state.engine = db.create_engine(settings, pool_size=min(settings.worker_concurrency, 10))
{%- endif %}
{%- if cookiecutter.use_metrics %}
    # Port 0 (the tests'): any free one, read from state.metrics_server.server_port.
    queue_depth = metrics_worker.QueueDepth(
        settings.redis_url, settings.redis_timeout_seconds, QUEUE, DEAD_LETTERS
    )
    state.metrics_server, _ = metrics_worker.serve(settings.worker_metrics_port, queue_depth)
{%- endif %}
    logger.info("worker started", extra={"environment": settings.environment})


async def close_worker_resources(state: TaskiqState) -> None:
{%- if cookiecutter.use_postgres %}
    await state.engine.dispose()
{%- endif %}
{%- if cookiecutter.use_metrics %}
    state.metrics_server.shutdown()
    state.metrics_server.server_close()
{%- endif %}
{%- if cookiecutter.use_tracing %}
    if state.tracer_provider is not None:
        state.tracer_provider.shutdown()  # exports the spans still buffered
{%- endif %}
    logger.info("worker stopped")


def create_worker_broker(
    settings: Settings | None = None, schedule: Sequence[periodic.Periodic] | None = None
) -> AsyncBroker:
    """The broker of a worker process: the app's, plus what the jobs use, and the
    periodic jobs (periodic.SCHEDULE unless given).

    It reads as the consumer named after the host (the container, the pod), which the
    health check looks for.
    """
    settings = settings or get_settings()
{%- if cookiecutter.use_tracing %}
    # Made here, in the worker process (the batch exporter's thread would not survive a fork).
    tracer_provider = tracing.create_tracer_provider()
    if tracer_provider is not None:
        tracing_worker.instrument_worker()
    broker = create_broker(
        settings, consumer_name=socket.gethostname(), tracer_provider=tracer_provider
    )
    broker.state.tracer_provider = tracer_provider
{%- else %}
    broker = create_broker(settings, consumer_name=socket.gethostname())
{%- endif %}
    broker.state.settings = settings
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, open_worker_resources)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, close_worker_resources)
    jobs = periodic.SCHEDULE if schedule is None else schedule
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, partial(periodic.start, broker, jobs))
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, periodic.stop)
{%- if cookiecutter.use_kubernetes %}
    # The heartbeat Kubernetes' liveness probe reads (worker_liveness.py).
    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, worker_liveness.start)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, worker_liveness.stop)
{%- endif %}
    return broker


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    settings = get_settings()  # a bad variable stops here, in one line
    configure_logging(settings.log_level)
    for handler in logging.getLogger().handlers:
        handler.addFilter(JobLogFilter())
    if arguments == ["replay"]:
        replayed = asyncio.run(_replay(settings))
        logger.info("dead letters replayed", extra={"replayed": replayed})
        return
    if arguments == ["health"]:
        # The container's health check: Redis answers and this host's worker has joined.
        sys.exit(0 if asyncio.run(_healthy(settings)) else 1)
    if arguments:
        sys.exit(f"usage: python -m {__name__} [replay | health]")
{%- if cookiecutter.use_metrics %}
    metrics_worker.reset_multiprocess_dir()
{%- endif %}
    # One process per container: scale with more containers (replicas), each stopped
    # on its own. On SIGTERM taskiq stops reading, lets the jobs in hand finish within
    # the grace period, and leaves what it did not finish unacknowledged.
    start_listen(
        WorkerArgs(
            broker=f"{__name__}:create_worker_broker",
            modules=JOB_MODULES,
            configure_logging=False,
            max_async_tasks=settings.worker_concurrency,
            max_prefetch=0,
            wait_tasks_timeout=settings.request_grace_seconds,
            shutdown_timeout=settings.graceful_timeout_seconds - settings.request_grace_seconds,
        )
    )


async def _healthy(settings: Settings) -> bool:
    broker = create_broker(settings)
    try:
        return await has_joined(broker, socket.gethostname())
    except REDIS_UNAVAILABLE:
        return False
    finally:
        await broker.shutdown()


async def _replay(settings: Settings) -> int:
    broker = create_broker(settings)
    try:
        return await replay_dead_letters(broker)
    finally:
        await broker.shutdown()


if __name__ == "__main__":
    main()

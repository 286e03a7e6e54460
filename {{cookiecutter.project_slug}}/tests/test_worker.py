"""The worker on real Redis: retries, dead letters, their replay, the request id."""

from __future__ import annotations

import socket
from collections.abc import AsyncGenerator
from typing import cast

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from taskiq import AckableMessage, TaskiqMessage, async_shared_broker
from taskiq_redis import RedisStreamBroker

from {{ cookiecutter.package_name }}.logging_config import request_id_var
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.worker import (
    DEAD_LETTERS,
    QUEUE,
    PermanentJobError,
    RetryThenDeadLetter,
    create_broker,
    has_joined,
    replay_dead_letters,
)
from tests.plugins.worker import eventually, running_worker

pytestmark = pytest.mark.services

# What the test jobs below did, and whether the flaky one fails.
runs: list[str] = []
failing = {"flaky": True}


@async_shared_broker.task(task_name="tests.flaky")
async def flaky(label: str) -> None:
    runs.append(label)
    if failing["flaky"]:
        raise RuntimeError(f"{label} failed")


@async_shared_broker.task(task_name="tests.refused")
async def refused(label: str) -> None:
    runs.append(label)
    raise PermanentJobError(f"{label} can never succeed")


@pytest.fixture(autouse=True)
def fresh_runs() -> None:
    runs.clear()
    failing["flaky"] = True


# The broker's pool does not decode: stream ids and fields are bytes.
Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def entries(broker: RedisStreamBroker, stream: str) -> Entries:
    async with Redis(connection_pool=broker.connection_pool) as redis:
        return cast(Entries, await redis.xrange(stream))


async def dead_letters(broker: RedisStreamBroker) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await entries(broker, DEAD_LETTERS)]


async def test_a_failing_job_is_retried_then_dead_lettered_with_its_error(
    worker: RedisStreamBroker, settings: Settings
) -> None:
    await flaky.kicker().with_broker(worker).kiq("a")

    async def dead_lettered() -> bool:
        return len(await dead_letters(worker)) == 1

    await eventually(dead_lettered)
    assert runs == ["a"] * settings.worker_max_attempts
    [letter] = await dead_letters(worker)
    assert letter[b"job"] == b"tests.flaky"
    assert letter[b"error"] == b"RuntimeError: a failed"
    assert letter[b"attempts"] == str(settings.worker_max_attempts).encode()


async def test_a_permanent_error_is_dead_lettered_without_a_retry(
    worker: RedisStreamBroker,
) -> None:
    await refused.kicker().with_broker(worker).kiq("b")

    async def dead_lettered() -> bool:
        return len(await dead_letters(worker)) == 1

    await eventually(dead_lettered)
    assert runs == ["b"]


async def test_replay_sends_the_dead_letters_back_as_first_attempts(
    worker: RedisStreamBroker, settings: Settings
) -> None:
    await flaky.kicker().with_broker(worker).kiq("c")

    async def dead_lettered() -> bool:
        return len(await dead_letters(worker)) == 1

    await eventually(dead_lettered)
    failing["flaky"] = False  # the cause is fixed
    assert await replay_dead_letters(worker) == 1
    assert await dead_letters(worker) == []

    async def ran_again() -> bool:
        return len(runs) == settings.worker_max_attempts + 1

    await eventually(ran_again)
    assert await dead_letters(worker) == []


async def test_replay_with_no_dead_letters_sends_nothing(broker: RedisStreamBroker) -> None:
    assert await replay_dead_letters(broker) == 0
    assert await entries(broker, QUEUE) == []


async def test_a_job_carries_the_id_of_the_request_that_enqueued_it(
    broker: RedisStreamBroker,
) -> None:
    token = request_id_var.set("req-123")
    try:
        await flaky.kicker().with_broker(broker).kiq("d")
    finally:
        request_id_var.reset(token)
    [(_, fields)] = await entries(broker, QUEUE)
    assert broker.formatter.loads(fields[b"data"]).labels["request_id"] == "req-123"


async def test_a_job_enqueued_before_any_worker_started_runs(
    broker: RedisStreamBroker, settings: Settings
) -> None:
    failing["flaky"] = False
    await flaky.kicker().with_broker(broker).kiq("early")

    async def ran() -> bool:
        return runs == ["early"]

    # The first worker ever: it creates the consumer group, after the job was queued.
    async with running_worker(settings):
        await eventually(ran)


async def test_a_retry_waits_its_delay_first(monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr("asyncio.sleep", sleep)
    retry = RetryThenDeadLetter()
    labels: dict[str, object] = {"_retries": "2", "delay": "3.5"}
    first = TaskiqMessage(task_id="1", task_name="tests.flaky", labels={}, args=[], kwargs={})
    await retry.pre_execute(first)
    await retry.pre_execute(first.model_copy(update={"labels": labels}))
    assert waited == [3.5]


async def test_the_health_check_finds_a_started_worker_only(
    broker: RedisStreamBroker, settings: Settings
) -> None:
    assert await has_joined(broker, socket.gethostname()) is False  # no group yet
    async with running_worker(settings) as worker:

        async def joined() -> bool:
            return await has_joined(worker, socket.gethostname())

        await eventually(joined)
        assert await has_joined(worker, "another-host") is False


async def test_reading_outlives_a_redis_outage(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """taskiq-redis's reading ends at a connection error (and the worker process with
    it); the worker's broker logs it and reads again."""
    outcomes: list[Exception | bytes] = [RedisConnectionError("Redis restarting"), b"a job"]

    async def listen(_broker: RedisStreamBroker) -> AsyncGenerator[AckableMessage]:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        yield AckableMessage(data=outcome, ack=lambda: None)

    monkeypatch.setattr(RedisStreamBroker, "listen", listen)
    monkeypatch.setattr("{{ cookiecutter.package_name }}.worker.READ_RETRY_SECONDS", 0)
    messages = create_broker(settings).listen()
    message = await anext(messages)
    await messages.aclose()
    assert message.data == b"a job"
    assert "redis unavailable" in caplog.text


async def test_an_enqueue_on_a_connection_redis_closed_succeeds(
    broker: RedisStreamBroker, settings: Settings
) -> None:
    """A pooled connection that Redis closed while it sat idle (a restart does) is
    replaced: the first enqueue after an outage is not a 503."""
    async with Redis(connection_pool=broker.connection_pool) as redis:
        pooled = await redis.client_id()  # the pool's one connection, idle again after
    async with Redis.from_url(settings.redis_url) as admin:
        assert await admin.client_kill_filter(_id=str(pooled)) == 1
    await flaky.kicker().with_broker(broker).kiq("after the drop")
    assert len(await entries(broker, QUEUE)) == 1

"""The jobs the worker runs (worker.JOB_MODULES lists this module).

Each is a taskiq task on ``async_shared_broker``; the caller picks the real broker:
``await process_item.kicker().with_broker(broker).kiq(item_id)``.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from taskiq import AsyncBroker, Context, TaskiqDepends, async_shared_broker

from {{ cookiecutter.package_name }} import periodic
from {{ cookiecutter.package_name }}.models import Item

logger = logging.getLogger(__name__)

# Only an item not processed yet: a second run (a redelivery, a replay) changes nothing.
MARK_PROCESSED = (
    update(Item)
    .where(Item.id == bindparam("item_id"), Item.processed_at.is_(None))
    .values(processed_at=func.now())
    .returning(Item.id)
)


async def mark_processed(engine: AsyncEngine, item_id: int) -> bool:
    """The example's work: set the item's processed_at; False when there was nothing to do."""
    async with engine.begin() as connection:
        row = (await connection.execute(MARK_PROCESSED, {"item_id": item_id})).first()
    return row is not None


def engine_of(context: Context = TaskiqDepends()) -> AsyncEngine:  # noqa: B008 (taskiq's form)
    engine: AsyncEngine = context.state.engine  # opened by worker.open_worker_resources
    return engine


# A default, not an Annotated parameter: kiq() then takes item_id alone.
WorkerEngine = TaskiqDepends(engine_of)


@async_shared_broker.task(task_name="process_item")
async def process_item(item_id: int, engine: AsyncEngine = WorkerEngine) -> None:
    """Enqueued by POST /items once the item is committed."""
    if await mark_processed(engine, item_id):
        logger.info("item processed", extra={"item_id": item_id})
    else:
        # Processed already, or deleted since: both are done.
        logger.info("item needed no processing", extra={"item_id": item_id})


# An item this old and still unprocessed lost its job: the app stopped between the
# commit and the enqueue, or Redis refused the enqueue (the client got a 503, the item
# was stored). Younger ones may still have their job in the queue.
SWEEP_AFTER = timedelta(minutes=5)
# Enqueued per tick at most: a backlog is worked off over several ticks.
SWEEP_LIMIT = 1000


async def enqueue_unprocessed(
    engine: AsyncEngine, broker: AsyncBroker, older_than: timedelta = SWEEP_AFTER
) -> list[int]:
    """Enqueue process_item for each item left unprocessed this long; their ids."""
    query = (
        select(Item.id)
        .where(Item.processed_at.is_(None), Item.created_at < func.now() - older_than)
        .order_by(Item.id)
        .limit(SWEEP_LIMIT)
    )
    async with engine.connect() as connection:
        ids = list((await connection.scalars(query)).all())
    for item_id in ids:
        # Harmless if its own job runs after all: process_item is idempotent.
        await process_item.kicker().with_broker(broker).kiq(item_id)
    return ids


def broker_of(context: Context = TaskiqDepends()) -> AsyncBroker:  # noqa: B008 (taskiq's form)
    return context.broker


@periodic.every(seconds=60)
@async_shared_broker.task(task_name="sweep_unprocessed_items")
async def sweep_unprocessed_items(
    engine: AsyncEngine = WorkerEngine,
    broker: AsyncBroker = TaskiqDepends(broker_of),  # noqa: B008 (taskiq's form)
) -> None:
    """Periodic (once a minute across all workers): items whose job was lost get one."""
    ids = await enqueue_unprocessed(engine, broker)
    if ids:
        logger.warning("unprocessed items enqueued again", extra={"items": len(ids)})

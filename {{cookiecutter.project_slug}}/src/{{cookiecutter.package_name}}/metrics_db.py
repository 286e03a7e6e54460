"""Prometheus gauges of the database pool, next to the request metrics of metrics.py.

Set from the pool's own counts at each checkout and checkin, so a scrape sees the
pool as it is, added up over the workers like the other live gauges.
"""

from __future__ import annotations

from prometheus_client import Gauge
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

# "livesum": /metrics adds up the workers still alive (see metrics.py).
POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out of the pool",
    multiprocess_mode="livesum",
)
POOL_OVERFLOW = Gauge(
    "db_pool_overflow",
    "Database connections open beyond DATABASE_POOL_SIZE (at most DATABASE_MAX_OVERFLOW)",
    multiprocess_mode="livesum",
)


def observe_pool(engine: AsyncEngine) -> None:
    """Keep the pool gauges current from the pool's own events."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return

    # Read from the pool's own counts at each event rather than counted up and down
    # here: a checkout whose reconnect fails (the database down) is checked in
    # without ever having been checked out, and a running count drifts below zero.
    def on_checkout(*_: object) -> None:
        POOL_IN_USE.set(pool.checkedout())
        POOL_OVERFLOW.set(max(pool.overflow(), 0))

    def on_checkin(*_: object) -> None:
        # Fired before the connection goes back, so the pool still counts it as out;
        # the pool closes it (and its overflow shrinks by one) only if already full.
        POOL_IN_USE.set(max(pool.checkedout() - 1, 0))
        closes = pool.checkedin() >= pool.size()
        POOL_OVERFLOW.set(max(pool.overflow() - closes, 0))

    event.listen(pool, "checkout", on_checkout)
    event.listen(pool, "checkin", on_checkin)

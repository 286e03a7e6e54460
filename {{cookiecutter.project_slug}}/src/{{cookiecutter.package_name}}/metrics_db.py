"""Prometheus gauges of the database pool, next to the request metrics of metrics.py.

Kept current from the pool's own checkout and checkin events, so a scrape sees the
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

    def on_checkout(*_: object) -> None:
        POOL_IN_USE.inc()
        POOL_OVERFLOW.set(max(pool.overflow(), 0))

    def on_checkin(*_: object) -> None:
        POOL_IN_USE.dec()
        # Fired before the connection goes back: the pool closes it (and its
        # overflow shrinks by one) only if the pool is already full.
        closes = pool.checkedin() >= pool.size()
        POOL_OVERFLOW.set(max(pool.overflow() - closes, 0))

    event.listen(pool, "checkout", on_checkout)
    event.listen(pool, "checkin", on_checkin)

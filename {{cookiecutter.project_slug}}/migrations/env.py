"""Alembic environment: async engine, URL and logging from the service's settings.

Run by the one-shot ``migrate`` job (compose.yaml), never by the app. Several copies
may start at once (scaled deployments, retried jobs): a session-level advisory lock,
held on the migrating connection from before the first revision until after the last,
serialises them, so the second one waits and then finds the schema already at head.
Session-level, not transaction-level: ``op.get_context().autocommit_block()`` (how
``CREATE INDEX CONCURRENTLY`` runs) ends the transaction, and the lock must outlive it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

{% if cookiecutter.include_example_api -%}
import {{ cookiecutter.package_name }}.models  # noqa: F401 - registers tables
{% endif -%}
from {{ cookiecutter.package_name }}.db import Base, connect_when_up
from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.settings import Settings, load_settings

# Any fixed 64-bit number works; it only has to be the same for every migrator.
MIGRATION_LOCK_ID = 0x6D6967726174650A

target_metadata = Base.metadata
logger = logging.getLogger("alembic.env")


def run_migrations_offline(settings: Settings) -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    context.configure(
        url=settings.database_sqlalchemy_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_migrations(connection: Connection, settings: Settings) -> None:
    logger.info("waiting for the migration lock")
    # Committed at once: the lock belongs to the session, so it survives the commit and
    # every transaction (and autocommit block) the revisions run.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        # A migration that waits on a busy table queues every request behind it; fail
        # fast instead and retry the job later. Set after the advisory lock, which may
        # rightly wait for another migrator for longer.
        lock_ms = round(settings.migration_lock_timeout_seconds * 1000)
        statement_ms = round(settings.migration_statement_timeout_seconds * 1000)
        connection.execute(text(f"SET lock_timeout = {lock_ms}"))
        connection.execute(text(f"SET statement_timeout = {statement_ms}"))
        connection.commit()
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        try:
            connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        except Exception:
            # A dead connection released the lock with its session; keep the real error.
            logger.warning("could not release the migration lock", exc_info=True)


async def run_migrations_online(settings: Settings) -> None:
    # NullPool: one connection for one run; nothing to keep warm in a job that exits.
    engine = create_async_engine(
        settings.database_sqlalchemy_url,
        poolclass=NullPool,
        # As the app's engine: a failed statement's values stay out of the log.
        hide_parameters=True,
        connect_args={
            # One connection attempt: a server that never answers it (packets dropped
            # while it starts) is tried again after this, within the overall wait.
            "timeout": settings.database_pool_timeout_seconds,
            "server_settings": settings.database_server_settings,
        },
    )
    try:
        # The job may start together with the database (compose.yaml): wait for it.
        connection = await connect_when_up(engine, settings.migration_connect_timeout_seconds)
        try:
            await connection.run_sync(_run_migrations, settings)
        finally:
            await connection.close()
    finally:
        await engine.dispose()


def main() -> None:
    settings = load_settings()
    # JSON lines like the app's, so the migrate job's log is parsed the same way; on
    # stderr, as Alembic's own logging always was: stdout carries what a command
    # prints (`alembic current`, which the Kubernetes schema gate reads).
    configure_logging(settings.log_level, stream=sys.stderr)
    if context.is_offline_mode():
        run_migrations_offline(settings)
    else:
        asyncio.run(run_migrations_online(settings))


main()

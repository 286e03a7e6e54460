"""Alembic environment: async engine, URL and logging from the service's settings.

Run by the one-shot ``migrate`` job, never by the app. It connects with
MIGRATION_DATABASE_URL (DATABASE_URL when unset), directly or through a pooler in session
mode: the lock below belongs to one server session. Several copies may start at once
(scaled deployments, retried jobs, two releases in quick succession): a session-level
advisory lock, held on the migrating connection from before the first revision until after
the last, serialises them, so the second one waits and then finds the schema already at
head. Session-level, not transaction-level: ``op.get_context().autocommit_block()`` (how
``CREATE INDEX CONCURRENTLY`` runs) ends the transaction, and the lock must outlive it.
The lock and statement timeouts are the opposite: set per transaction, they end with it,
and no later client of a pooled server connection inherits them.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from alembic import context
from alembic.util import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import Connection

{% if cookiecutter.include_example_api -%}
import {{ cookiecutter.package_name }}.models  # noqa: F401 - registers tables
{% endif -%}
from {{ cookiecutter.package_name }}.db import Base, connect_when_up, create_migration_engine
from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.settings import ConfigurationError, Settings, load_settings

# Any fixed 64-bit number works; it only has to be the same for every migrator.
MIGRATION_LOCK_ID = 0x6D6967726174650A

target_metadata = Base.metadata
logger = logging.getLogger("alembic.env")


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    context.configure(
        # The SQL is printed, not run: the dialect is all it needs from the URL.
        dialect_name="postgresql",
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _limit_each_transaction(connection: Connection, settings: Settings) -> None:
    """From now on, every transaction on ``connection`` starts with the migration timeouts.

    A migration that waits on a busy table queues every request behind it: it fails fast
    instead, and the job is retried later. Transaction-local (``set_config(..., true)``),
    so nothing outlives the transaction on a pooled server connection; and at every
    transaction's start, because an autocommit block ends the first one and Alembic
    begins another after it. (The statements inside an autocommit block run outside any
    transaction, without them.) On the driver's cursor: executing through ``connection``
    from this hook would begin another transaction inside this one's start; the asyncpg
    driver sends BEGIN with the cursor's first statement, so the settings come first.
    """
    lock_ms = round(settings.migration_lock_timeout_seconds * 1000)
    statement_ms = round(settings.migration_statement_timeout_seconds * 1000)
    limits = (
        f"SELECT set_config('lock_timeout', '{lock_ms}', true),"
        f" set_config('statement_timeout', '{statement_ms}', true)"
    )

    def limit(begun: Connection) -> None:
        cursor = begun.connection.cursor()
        try:
            cursor.execute(limits)
        finally:
            cursor.close()

    event.listen(connection, "begin", limit)


def _revisions_of_a_later_release() -> list[str]:
    """The database's revisions that this image does not know: a later release's."""
    unknown = []
    for head in context.get_context().get_current_heads():
        try:
            context.script.get_revision(head)
        except CommandError:
            unknown.append(head)
    return unknown


def _run_migrations(connection: Connection, settings: Settings) -> None:
    logger.info("waiting for the migration lock")
    # Committed at once: the lock belongs to the session, so it survives the commit and
    # every transaction (and autocommit block) the revisions run. Taken before the
    # timeouts, as it may rightly wait for another migrator for longer.
    connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    connection.commit()
    try:
        _limit_each_transaction(connection, settings)
        context.configure(connection=connection, target_metadata=target_metadata)
        later = _revisions_of_a_later_release()
        if later and context.get_context().opts.get("destination_rev") in {"head", "heads"}:
            # An older release's job after a newer one's (two releases in quick
            # succession, a rollback): its head is behind the schema, and stepping the
            # schema back is never a side effect of deploying code.
            logger.info(
                "the database is at a later release's revision: nothing to upgrade",
                extra={"revisions": later},
            )
            return
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
    # One connection for one run, in a job that exits.
    engine = create_migration_engine(settings)
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
    # prints (`alembic current`, `alembic heads`).
    configure_logging(settings.log_level, stream=sys.stderr)
    if context.is_offline_mode():
        run_migrations_offline()
        return
    if not settings.migration_database_url and not settings.database_statement_cache:
        # The statement cache is off for a transaction pooler (PgBouncer's transaction
        # mode), where the session lock would stay on a pooled server connection after
        # the job exits and hold up the next one.
        raise ConfigurationError(
            "DATABASE_STATEMENT_CACHE=false says DATABASE_URL goes through a transaction "
            "pooler, which cannot hold the migration lock: set MIGRATION_DATABASE_URL to a "
            "direct or session-mode URL"
        )
    asyncio.run(run_migrations_online(settings))


main()

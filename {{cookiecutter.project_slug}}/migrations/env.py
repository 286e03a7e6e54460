"""Alembic environment: async engine, URL from the service's settings.

Run by the one-shot ``migrate`` job (compose.yaml), never by the app. Several
copies may start at once (scaled deployments, retried jobs): a transaction-level
advisory lock serialises them, so the second one waits and then finds the
schema already at head.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

{% if cookiecutter.include_example_api -%}
import {{ cookiecutter.package_name }}.models  # noqa: F401 - registers tables
{% endif -%}
from {{ cookiecutter.package_name }}.db import Base
from {{ cookiecutter.package_name }}.settings import load_settings

# Any fixed 64-bit number works; it only has to be the same for every migrator.
MIGRATION_LOCK_ID = 0x6D6967726174650A

target_metadata = Base.metadata

# alembic.ini's [loggers]: the migrate job reports which revisions it applied.
# Existing loggers stay enabled, so running this from the tests changes nothing.
if context.config.config_file_name is not None:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)


def run_migrations_offline() -> None:
    """``alembic upgrade head --sql``: print the SQL instead of running it."""
    context.configure(
        url=load_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        # Held until this transaction ends, released even if the job dies.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(load_settings().database_url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())

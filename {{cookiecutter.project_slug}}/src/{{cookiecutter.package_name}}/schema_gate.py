"""The schema gate: may this image's code run on the database as it is now?

Run as the Deployment's init container (deploy/kubernetes/base/deployment.yaml): it waits
until the answer is yes, then exits 0 and the app starts. It only reads Alembic's version
table and never takes the migration lock (migrations/env.py), so a long migration holds up
no pod that may start anyway.

Expand/contract: a release's revisions only add to the schema; a later release removes
what no code still running (or still a rollback target) uses. Code therefore works on a
newer schema, and the gate lets a pod start when

- the database has this image's *minimum*: on each branch, the newest revision whose file
  does not set ``needed_by_code = False`` (migrations/script.py.mako); or
- the database is at a revision this image does not know, which only a later release
  can have written: the code was rolled back, not the schema.

It waits while the database is older than the minimum: this release's migration Job has
not finished (or failed, see the README's "When a migration fails").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from {{ cookiecutter.package_name }}.db import create_migration_engine, is_misconfigured, is_unavailable
from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.settings import Settings, load_settings

logger = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def minimum(script: ScriptDirectory) -> set[str]:
    """The revisions this image's code needs: per branch, the newest one it needs."""
    needed: set[str] = set()
    for head in script.get_heads():
        for revision in script.iterate_revisions(head, "base"):
            if getattr(revision.module, "needed_by_code", True):
                needed.add(revision.revision)
                break
    return needed


def reason_to_wait(script: ScriptDirectory, current: Collection[str]) -> str | None:
    """Why this image's code may not run on a database at ``current`` yet; None if it may."""
    if not current:
        if not minimum(script):
            return None  # this image's code needs no revision (a service without any yet)
        return "the database has no revision yet: waiting for the migration Job"
    applied: set[str] = set()
    for head in current:
        try:
            script.get_revision(head)
        except CommandError:
            return None  # a later release's revision: its schema still serves this code
        applied.update(revision.revision for revision in script.iterate_revisions(head, "base"))
    missing = minimum(script) - applied
    if missing:
        return (
            f"the database is at {sorted(current)} and this image needs {sorted(missing)}:"
            " waiting for the migration Job"
        )
    return None


def _current_revisions(connection: Connection) -> set[str]:
    # Alembic's own reader: an absent version table is no revision, not an error.
    return set(MigrationContext.configure(connection).get_current_heads())


async def wait_for_schema(
    settings: Settings, script: ScriptDirectory, poll_seconds: float = POLL_SECONDS
) -> set[str]:
    """Return the database's revisions once this image's code may run on them."""
    # A short read every few seconds; no connection is kept between them.
    engine = create_migration_engine(settings)
    reported: str | None = None
    try:
        while True:
            try:
                async with engine.connect() as connection:
                    current = await connection.run_sync(_current_revisions)
            except Exception as error:
                # Down or starting is waited out; wrong credentials or anything else
                # fail the container, which the kubelet restarts with a back-off.
                if not is_unavailable(error) or is_misconfigured(error):
                    raise
                reason: str | None = "the database does not accept connections yet"
            else:
                reason = reason_to_wait(script, current)
                if reason is None:
                    logger.info(
                        "the schema serves this image", extra={"revisions": sorted(current)}
                    )
                    return current
            if reason != reported:  # once per change, not every poll
                logger.info("waiting: %s", reason)
                reported = reason
            await asyncio.sleep(poll_seconds)
    finally:
        await engine.dispose()


def main() -> None:
    settings = load_settings()
    configure_logging(settings.log_level)
    asyncio.run(wait_for_schema(settings, ScriptDirectory.from_config(Config("alembic.ini"))))


if __name__ == "__main__":
    main()

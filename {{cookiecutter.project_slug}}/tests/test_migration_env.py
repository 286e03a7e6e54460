"""migrations/env.py on throwaway revisions and a database of their own: the URL it
connects with, the timeouts of every transaction it runs, and an older release's run
on a newer schema."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.services  # a database next to the test database

MIGRATIONS = Path("migrations")

CREATE_PROBE = """
import sqlalchemy as sa
from alembic import op

revision = "a1"
down_revision = None
branch_labels = None
depends_on = None

RECORD = (
    "INSERT INTO probe VALUES (:step, current_setting('lock_timeout'),"
    " current_setting('statement_timeout'))"
)


def upgrade() -> None:
    op.execute("CREATE TABLE probe (step text, lock_timeout text, statement_timeout text)")
    op.get_bind().execute(sa.text(RECORD), {"step": "first"})


def downgrade() -> None:
    op.execute("DROP TABLE probe")
"""

AFTER_AN_AUTOCOMMIT_BLOCK = """
import sqlalchemy as sa
from alembic import op

revision = "a2"
down_revision = "a1"
branch_labels = None
depends_on = None

RECORD = (
    "INSERT INTO probe VALUES (:step, current_setting('lock_timeout'),"
    " current_setting('statement_timeout'))"
)


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("SELECT 1")
    op.get_bind().execute(sa.text(RECORD), {"step": "after an autocommit block"})


def downgrade() -> None:
    pass
"""


@pytest.fixture
def release(tmp_path: Path) -> Callable[..., Config]:
    """A release's migrations: this service's env.py with the given revisions."""

    def make(name: str, *revisions: str) -> Config:
        location = tmp_path / name
        (location / "versions").mkdir(parents=True)
        shutil.copy(MIGRATIONS / "env.py", location / "env.py")
        for number, source in enumerate(revisions):
            (location / "versions" / f"{number}.py").write_text(source)
        config = Config()
        config.set_main_option("script_location", str(location))
        return config

    return make


def query(url: str, statement: str) -> list[tuple[object, ...]]:
    async def run() -> list[tuple[object, ...]]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return [tuple(row) for row in await connection.execute(text(statement))]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def use(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_every_transaction_of_a_run_has_the_migration_timeouts(
    scratch_url: str, release: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    use(
        monkeypatch,
        DATABASE_URL=scratch_url,
        MIGRATION_DATABASE_URL="",
        MIGRATION_LOCK_TIMEOUT_SECONDS="3",
        MIGRATION_STATEMENT_TIMEOUT_SECONDS="120",
    )
    command.upgrade(release("r", CREATE_PROBE, AFTER_AN_AUTOCOMMIT_BLOCK), "head")
    assert sorted(query(scratch_url, "SELECT * FROM probe")) == [
        ("after an autocommit block", "3s", "2min"),
        ("first", "3s", "2min"),
    ]


def test_migrations_connect_with_their_own_url(
    scratch_url: str, release: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    use(
        monkeypatch,
        # The app's URL through a transaction pooler; refused here, so never used.
        DATABASE_URL="postgresql+asyncpg://app:app@127.0.0.1:1/app",
        DATABASE_STATEMENT_CACHE="false",
        MIGRATION_DATABASE_URL=scratch_url,
        MIGRATION_CONNECT_TIMEOUT_SECONDS="1",
    )
    command.upgrade(release("r", CREATE_PROBE), "head")
    assert query(scratch_url, "SELECT version_num FROM alembic_version") == [("a1",)]


def test_a_transaction_pooler_without_a_migration_url_is_refused(
    scratch_url: str, release: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    use(
        monkeypatch,
        DATABASE_URL=scratch_url,
        DATABASE_STATEMENT_CACHE="false",
        MIGRATION_DATABASE_URL="",
    )
    with pytest.raises(SystemExit, match="set MIGRATION_DATABASE_URL"):
        command.upgrade(release("r", CREATE_PROBE), "head")
    assert query(scratch_url, "SELECT to_regclass('alembic_version')") == [(None,)]


def test_an_older_release_leaves_a_newer_schema_alone(
    scratch_url: str, release: Callable[..., Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, DATABASE_URL=scratch_url, MIGRATION_DATABASE_URL="")
    command.upgrade(release("newer", CREATE_PROBE, AFTER_AN_AUTOCOMMIT_BLOCK), "head")
    # The older release's Job, after the newer one's: nothing to do, and no error.
    command.upgrade(release("older", CREATE_PROBE), "head")
    assert query(scratch_url, "SELECT version_num FROM alembic_version") == [("a2",)]
    # Other commands still refuse a revision this release does not know.
    with pytest.raises(Exception, match="a2"):
        command.downgrade(release("older-again", CREATE_PROBE), "base")

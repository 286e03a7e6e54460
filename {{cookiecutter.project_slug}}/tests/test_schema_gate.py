"""The schema gate: which databases this image's code may start on, and that it never
waits for the migration lock."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from {{ cookiecutter.package_name }} import schema_gate
from {{ cookiecutter.package_name }}.schema_gate import minimum, reason_to_wait, wait_for_schema
from {{ cookiecutter.package_name }}.settings import Settings

# migrations/env.py's advisory lock key.
MIGRATION_LOCK_ID = 0x6D6967726174650A

REVISION = """revision = "{revision}"
down_revision = {down!r}
branch_labels = None
depends_on = None
{marker}

def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
"""


def scripts(tmp_path: Path, *revisions: tuple[str, str | None, bool | None]) -> ScriptDirectory:
    """A script directory of (revision, down_revision, needed_by_code) stubs."""
    (tmp_path / "versions").mkdir()
    for revision, down, needed in revisions:
        marker = "" if needed is None else f"needed_by_code = {needed}\n"
        text_ = REVISION.format(revision=revision, down=down, marker=marker)
        (tmp_path / "versions" / f"{revision}.py").write_text(text_)
    return ScriptDirectory(str(tmp_path))


@pytest.fixture
def three_releases(tmp_path: Path) -> ScriptDirectory:
    # a: no marker (needed, the default); b: needed; c: a step the code runs without.
    return scripts(tmp_path, ("a", None, None), ("b", "a", True), ("c", "b", False))


def test_the_minimum_is_the_newest_revision_the_code_needs(three_releases: ScriptDirectory) -> None:
    assert minimum(three_releases) == {"b"}


def test_a_service_without_revisions_opens_on_an_empty_database(tmp_path: Path) -> None:
    # No revision at all yet (the service has no table of its own): nothing to wait for.
    assert reason_to_wait(scripts(tmp_path), set()) is None


@pytest.mark.parametrize(
    ("current", "waits"),
    [
        (set(), True),  # nothing migrated yet
        ({"a"}, True),  # this release's Job has not run
        ({"b"}, False),  # at the minimum: c is not needed by the code
        ({"c"}, False),  # at this image's head
        ({"d"}, False),  # a later release's revision: a rollback of the code
    ],
)
def test_the_gate_opens_at_the_minimum_or_a_later_release(
    three_releases: ScriptDirectory, current: set[str], waits: bool
) -> None:
    reason = reason_to_wait(three_releases, current)
    assert (reason is not None) == waits, reason


def test_every_branch_must_reach_its_minimum(tmp_path: Path) -> None:
    script = scripts(tmp_path, ("a", None, None), ("x", "a", None), ("y", "a", None))
    assert minimum(script) == {"x", "y"}
    assert reason_to_wait(script, {"x"}) is not None
    assert reason_to_wait(script, {"x", "y"}) is None


@pytest.mark.services  # the migrated test database
async def test_the_gate_opens_while_a_migration_holds_the_lock(database_url: str) -> None:
    """A long migration holds the lock; a pod whose schema is already there starts."""
    holder = create_async_engine(database_url)
    try:
        async with holder.connect() as connection:
            await connection.execute(
                text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID}
            )
            # No MIGRATION_DATABASE_URL (the test session sets one): DATABASE_URL's.
            settings = Settings(
                _env_file=None, database_url=database_url, migration_database_url=""
            )
            script = ScriptDirectory.from_config(Config("alembic.ini"))
            # A gate that queued for the lock would wait here until the test times out.
            async with asyncio.timeout(30):
                current = await wait_for_schema(settings, script, poll_seconds=0.05)
            assert current == set(script.get_heads())
    finally:
        await holder.dispose()


@pytest.mark.services
async def test_the_gate_fails_at_once_on_wrong_credentials(database_url: str) -> None:
    wrong = make_url(database_url).set(password="not-the-password")
    settings = Settings(
        _env_file=None,
        # Refused, which the gate would wait out: it must read the migration URL.
        database_url="postgresql+asyncpg://app:app@127.0.0.1:1/app",
        migration_database_url=wrong.render_as_string(hide_password=False),
    )
    script = ScriptDirectory.from_config(Config("alembic.ini"))
    with pytest.raises(Exception, match="password authentication failed"):
        async with asyncio.timeout(30):
            await wait_for_schema(settings, script, poll_seconds=0.05)


@pytest.mark.services
async def test_the_gate_waits_for_the_job_then_opens(scratch_url: str, tmp_path: Path) -> None:
    script = scripts(tmp_path, ("a", None, None))
    settings = Settings(_env_file=None, database_url=scratch_url, migration_database_url="")
    said: list[str] = []
    waiting = asyncio.Event()

    class Listener(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())
            waiting.set()

    listener = Listener()
    gate_logger = logging.getLogger(schema_gate.__name__)
    gate_logger.addHandler(listener)
    gate_logger.setLevel(logging.INFO)
    try:
        gate = asyncio.create_task(wait_for_schema(settings, script, poll_seconds=0.01))
        async with asyncio.timeout(30):
            await waiting.wait()
            await asyncio.sleep(0.1)  # more rounds of its loop, all still waiting
            assert not gate.done()
            engine = create_async_engine(scratch_url)
            try:
                async with engine.begin() as connection:  # what the Job leaves behind
                    await connection.execute(
                        text("CREATE TABLE alembic_version (version_num text)")
                    )
                    await connection.execute(text("INSERT INTO alembic_version VALUES ('a')"))
            finally:
                await engine.dispose()
            assert await gate == {"a"}
    finally:
        gate_logger.removeHandler(listener)
        gate_logger.setLevel(logging.NOTSET)
    # Said once, not every round; then that it opens.
    assert [message.split(":")[0] for message in said] == [
        "waiting",
        "the schema serves this image",
    ]
    assert "no revision yet" in said[0]

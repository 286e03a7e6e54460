from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from {{ cookiecutter.package_name }} import db
from {{ cookiecutter.package_name }}.db import (
    ConnectionDep,
    SessionDep,
    connect_when_up,
    create_engine,
    is_misconfigured,
    is_unavailable,
)
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings


async def terminate_app_connections(settings: Settings) -> int:
    """What a database restart does to the pool: every app session ends server-side."""
    admin = await asyncpg.connect(settings.database_dsn)
    try:
        ended: list[asyncpg.Record] = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
        )
    finally:
        await admin.close()
    await asyncio.sleep(0.2)  # let the event loop see the closed sockets
    return len(ended)


async def test_work_a_failed_request_did_not_commit_is_not_kept(
    app: FastAPI, client: AsyncClient
) -> None:
    @app.post("/half-done")
    async def half_done(session: SessionDep) -> None:
        # DDL is transactional in PostgreSQL: the table exists only if committed.
        await session.execute(text("CREATE TABLE half_done (n int)"))
        raise RuntimeError("the handler failed after writing")

    assert (await client.post("/half-done")).status_code == 500
    async with app.state.engine.connect() as connection:
        found = await connection.execute(text("SELECT to_regclass('half_done')"))
        assert found.scalar_one() is None


SECRET = "card 4111-1111-1111-1111"


async def test_a_failed_statement_logs_and_answers_without_its_values(
    app: FastAPI, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.post("/leaky")
    async def leaky(connection: ConnectionDep) -> None:
        # Fails in the server, with the value bound to the statement. (Not a failed
        # cast: PostgreSQL's own message for that quotes the value it refused.)
        await connection.execute(text("SELECT CAST(:value AS text), 1 / 0"), {"value": SECRET})

    # create_app routes logging to stdout; keep pytest's capture listening too.
    logging.getLogger().addHandler(caplog.handler)
    with caplog.at_level(logging.DEBUG):
        response = await client.post("/leaky")
    assert response.status_code == 500
    assert SECRET not in response.text
    logged = [caplog.handler.format(record) for record in caplog.records]
    assert any("division by zero" in line for line in logged), "the failure was not logged"
    assert not [line for line in logged if SECRET in line]


@pytest.mark.services  # the migrated test database, without the app
def test_a_failed_migration_fails_without_its_values(
    database_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = Config("alembic.ini")
    # A copy of migrations/ with one more revision, which fails in the server
    # with a value bound to its statement: env.py's own engine runs it.
    scripts = tmp_path / "migrations"
    shutil.copytree(config.get_main_option("script_location") or "migrations", scripts)
    head = ScriptDirectory.from_config(config).get_current_head()
    (scripts / "versions" / "9999_leaky.py").write_text(
        "from alembic import op\n"
        "from sqlalchemy import text\n"
        f"revision = 'leaky'\ndown_revision = {head!r}\n"
        "def upgrade() -> None:\n"
        f"    op.execute(text('SELECT CAST(:v AS text), 1 / 0').bindparams(v={SECRET!r}))\n"
    )
    config.set_main_option("script_location", str(scripts))
    with pytest.raises(DBAPIError) as failed:
        command.upgrade(config, "head")
    # What the alembic command prints when it fails, and what env.py logged.
    assert "division by zero" in str(failed.value)
    assert SECRET not in str(failed.value)
    assert SECRET not in "".join(capfd.readouterr())


async def test_the_session_is_released_before_the_response_is_sent(
    app: FastAPI, client: AsyncClient
) -> None:
    seen: list[int] = []

    @app.get("/streamed")
    async def streamed(session: SessionDep) -> StreamingResponse:
        await session.execute(text("SELECT 1"))

        async def body() -> AsyncIterator[bytes]:
            # A slow client reads this while the pool could already serve others.
            seen.append(app.state.engine.pool.checkedout())
            yield b"done"

        return StreamingResponse(body())

    response = await client.get("/streamed")
    assert response.text == "done"
    assert seen == [0], "the request's connection was still checked out while streaming"


async def test_a_dead_connection_at_teardown_does_not_change_the_response(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    @app.get("/dies-after")
    async def dies_after(session: SessionDep) -> dict[str, str]:
        await session.execute(text("SELECT 1"))  # opens a transaction to roll back later
        await terminate_app_connections(settings)
        return {"answer": "chosen before the connection died"}

    response = await client.get("/dies-after")
    assert response.status_code == 200
    assert response.json() == {"answer": "chosen before the connection died"}


async def test_requests_after_a_database_restart_succeed_without_an_app_restart(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    @app.get("/now")
    async def now(session: SessionDep) -> dict[str, str]:
        return {"now": str((await session.execute(text("SELECT now()"))).scalar_one())}

    @app.post("/now")
    async def write_now(session: SessionDep) -> dict[str, str]:
        return {"now": str((await session.execute(text("SELECT now()"))).scalar_one())}

    # Fill the pool, then end every session as a restart would.
    responses = await asyncio.gather(*(client.get("/now") for _ in range(4)))
    assert {r.status_code for r in responses} == {200}
    assert await terminate_app_connections(settings) >= 1
    # The write first: it is never retried, and a read's retry would invalidate the
    # whole pool and hide a dead connection handed to the write.
    assert (await client.post("/now")).status_code == 200
    assert (await client.get("/now")).status_code == 200


@pytest.mark.parametrize(("method", "expected"), [("GET", [200]), ("POST", [503])])
async def test_only_reads_are_retried_after_a_stale_connection(
    app: FastAPI, client: AsyncClient, method: str, expected: list[int]
) -> None:
    calls: list[str] = []

    async def flaky() -> dict[str, int]:
        calls.append(method)
        if len(calls) == 1:
            # What SQLAlchemy raises when a pooled connection turns out to be closed.
            raise DBAPIError("SELECT 1", None, ConnectionResetError(), connection_invalidated=True)
        return {"calls": len(calls)}

    app.add_api_route("/flaky", flaky, methods=[method])
    response = await client.request(method, "/flaky")
    assert [response.status_code] == expected
    assert len(calls) == (2 if method == "GET" else 1)
    if method == "POST":
        assert response.headers["retry-after"] == "5"


def database_down(settings: Settings, **changes: str) -> Settings:
    url = make_url(settings.database_dsn).set(**changes)  # type: ignore[arg-type]
    return settings.model_copy(
        update={
            "database_url": url.render_as_string(hide_password=False),
            "database_pool_timeout_seconds": 2.0,
        }
    )


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("refused", {"host": "127.0.0.1", "port": 1}),
        ("no such host", {"host": "db.invalid"}),
        ("wrong password", {"password": "not-the-password"}),
        ("no such database", {"database": "no_such_database"}),
    ],
)
async def test_an_unreachable_database_is_a_503_with_retry_after(
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    case: str,
    changes: dict[str, str],
) -> None:
    app = create_app(database_down(settings, **changes))
    # create_app routes logging to stdout; keep pytest's capture listening too.
    logging.getLogger().addHandler(caplog.handler)

    @app.get("/reads")
    async def reads(session: SessionDep) -> None:
        await session.execute(text("SELECT 1"))

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            with caplog.at_level(logging.DEBUG):
                responses = [await http.get("/reads") for _ in range(3)]
    assert [r.status_code for r in responses] == [503] * 3, case
    assert responses[0].headers["retry-after"] == "5"
    assert responses[0].json()["request_id"] == responses[0].headers["x-request-id"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if case == "wrong password":
        # A misconfiguration: the operator hears about it once, not once per request.
        assert len(errors) == 1, errors
    else:
        assert errors == [], "an outage is not a bug"


async def test_a_full_pool_is_a_503(settings: Settings, client: AsyncClient, app: FastAPI) -> None:
    @app.get("/reads")
    async def reads(session: SessionDep) -> None:
        await session.execute(text("SELECT 1"))

    engine = app.state.engine
    held = [await engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        engine.pool._timeout = 0.2  # as if DATABASE_POOL_TIMEOUT_SECONDS were short
        response = await client.get("/reads")
    finally:
        for connection in held:
            await connection.close()
    assert response.status_code == 503


async def test_a_timeout_inside_the_driver_is_an_outage_but_ours_is_a_bug(
    settings: Settings,
) -> None:
    connection = await asyncpg.connect(settings.database_dsn)
    try:
        # A server that stops answering looks like this to the client: no reply in time.
        with pytest.raises(TimeoutError) as from_driver:
            await connection.fetch("SELECT pg_sleep(1)", timeout=0.05)
    finally:
        connection.terminate()
    with pytest.raises(TimeoutError) as from_us:
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)
    assert is_unavailable(from_driver.value)
    assert not is_unavailable(from_us.value)


async def test_a_read_only_server_is_a_503_with_retry_after(settings: Settings) -> None:
    # What a primary demoted by a failover answers to a write (SQLSTATE 25006).
    options = "options=-c%20default_transaction_read_only%3Don"
    app = create_app(
        settings.model_copy(update={"database_url": f"{settings.database_url}?{options}"})
    )

    @app.post("/writes")
    async def writes(connection: ConnectionDep) -> None:
        await connection.execute(text("CREATE TABLE written (n int)"))

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.post("/writes")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("error", "retry_later"),
    [
        (asyncpg.ReadOnlySQLTransactionError, True),
        (asyncpg.SerializationError, True),
        (asyncpg.DeadlockDetectedError, True),
        (asyncpg.LockNotAvailableError, True),
        (asyncpg.TooManyConnectionsError, True),
        (asyncpg.CannotConnectNowError, True),
        (asyncpg.QueryCanceledError, False),  # a statement timeout: the query is the bug
        (asyncpg.UniqueViolationError, False),
        (asyncpg.UndefinedTableError, False),
    ],
)
def test_which_server_errors_mean_retry_later(
    error: type[asyncpg.PostgresError], retry_later: bool
) -> None:
    assert is_unavailable(DBAPIError("SELECT 1", None, error("from the server"))) is retry_later


async def test_a_slow_query_is_a_bug_not_an_outage(settings: Settings) -> None:
    engine = create_engine(settings.model_copy(update={"database_statement_timeout_seconds": 0.2}))
    try:
        async with engine.connect() as connection:
            with pytest.raises(DBAPIError) as caught:
                await connection.execute(text("SELECT pg_sleep(2)"))
    finally:
        await engine.dispose()
    # The server cancelled it (query_canceled): the database is fine, the query is not.
    assert not is_unavailable(caught.value)


class SilentRelay:
    """A TCP relay to the test database that can fall silent, as a server does when it is
    cut off the network or hangs: its connections stay open but nothing gets through
    either way any more, and new ones are accepted and never answered. No reset, no error:
    the client only ever meets the silence."""

    def __init__(self, settings: Settings) -> None:
        self._url = make_url(settings.database_url)
        self._target = (self._url.host or "localhost", self._url.port or 5432)
        self.silent = False
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self, settings: Settings, **changes: object) -> Settings:
        """The settings with the database behind this relay, and the given changes."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        url = self._url.set(host="127.0.0.1", port=self._server.sockets[0].getsockname()[1])
        database_url = url.render_as_string(hide_password=False)
        return settings.model_copy(update={"database_url": database_url, **changes})

    async def close(self) -> None:
        for writer in self._writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        if self.silent:
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        self._writers.append(upstream_writer)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            if not self.silent:  # what is sent into the silence is lost
                sink.write(data)
                await sink.drain()
        if not self.silent:
            sink.close()


async def silent_after_filling_the_pool(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[AsyncEngine, SilentRelay]:
    """An engine whose three pooled connections were opened, then the server fell silent.

    The server's statement timeout and the client's grace are tenths of a second, so the
    client gives up on a statement after 0.3 s (15 s + 2 s by default).
    """
    monkeypatch.setattr(db, "CLIENT_TIMEOUT_GRACE_SECONDS", 0.2)
    relay = SilentRelay(settings)
    changes = {
        "database_statement_timeout_seconds": 0.1,
        "database_pool_size": 3,
        "database_pool_timeout_seconds": 0.5,
    }
    engine = create_engine(await relay.start(settings, **changes))
    opened = [await engine.connect() for _ in range(3)]
    for connection in opened:
        await connection.execute(text("SELECT 1"))
        await connection.close()
    relay.silent = True
    return engine, relay


async def test_a_silent_server_costs_one_statement_timeout_not_one_per_pooled_connection(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, relay = await silent_after_filling_the_pool(settings, monkeypatch)
    still_open_when_closed: list[ConnectionPoolEntry] = []

    @event.listens_for(engine.sync_engine, "close")
    def closing(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        # Runs after db.py's own listeners: by now the connection should be dropped,
        # not waiting for a polite goodbye that a silent server never answers.
        if not dbapi_connection.driver_connection.is_closed():
            still_open_when_closed.append(record)

    try:
        async with engine.connect() as connection:
            with pytest.raises(TimeoutError) as statement:
                await connection.execute(text("SELECT 1"))
        # The two other pooled connections are as dead: instead of handing one out to be
        # waited out by the next request, the pool reconnects, which fails in its timeout.
        with pytest.raises(TimeoutError) as checkout:
            async with engine.connect():
                pass
        relay.silent = False  # the server is back: the next request succeeds
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
        await relay.close()
    assert is_unavailable(statement.value)
    assert is_unavailable(checkout.value)
    assert still_open_when_closed == [], "a connection to a silent server was closed politely"


async def test_closing_the_pool_waits_for_no_silent_server(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    engine, relay = await silent_after_filling_the_pool(settings, monkeypatch)
    try:
        with caplog.at_level(logging.DEBUG):
            await engine.dispose()  # what the lifespan does at shutdown
    finally:
        await relay.close()
    # A polite close of each connection would wait out the statement timeout and the
    # grace, one connection after another, each an ERROR "Exception closing connection".
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


async def test_a_statement_cancelled_with_its_request_is_cancelled_in_the_server(
    settings: Settings,
) -> None:
    engine = create_engine(settings)
    watcher = await asyncpg.connect(settings.database_dsn)

    async def wait_until_running(pid: int, running: bool) -> None:
        for _ in range(200):  # 10 s, well within the 15 s statement timeout
            state = await watcher.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
            if (state == "active") is running:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"the statement {'never started' if running else 'still runs'}")

    try:
        async with engine.connect() as connection:
            pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            statement = asyncio.create_task(connection.execute(text("SELECT pg_sleep(60)")))
            await wait_until_running(pid, True)
            statement.cancel()  # as a shutdown cancels a request past its grace
            with pytest.raises(asyncio.CancelledError):
                await statement
        # Dropped without a word, the connection would leave the statement running in
        # the server until its statement timeout; the polite close cancels it.
        await wait_until_running(pid, False)
    finally:
        await watcher.close()
        await engine.dispose()


class LateDatabase:
    """A TCP relay to the test database that starts accepting only when ``open`` is
    called: a database that starts after the job that needs it. Until then its port is
    bound but not listening, so connections are refused and no one else can take it. It
    counts the connections it relayed."""

    def __init__(self, settings: Settings) -> None:
        url = make_url(settings.database_dsn).set(drivername="postgresql+asyncpg")
        self.target = (url.host or "localhost", url.port or 5432)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = url.set(host="127.0.0.1", port=self._socket.getsockname()[1])
        self.relayed = 0
        self._server: asyncio.Server | None = None

    def engine(self, password: str | None = None) -> AsyncEngine:
        url = self.url if password is None else self.url.set(password=password)
        # No TLS to a relay on loopback: one attempt is one connection.
        return create_async_engine(
            url.render_as_string(hide_password=False),
            poolclass=NullPool,
            connect_args={"ssl": False},
        )

    async def open(self) -> None:
        self._socket.listen()
        self._server = await asyncio.start_server(self._relay, sock=self._socket)

    async def close(self) -> None:
        if self._server is None:
            self._socket.close()
            return
        self._server.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.relayed += 1
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(
            pipe(reader, upstream_writer), pipe(upstream_reader, writer), return_exceptions=True
        )


async def test_a_job_waits_for_a_database_that_starts_after_it(settings: Settings) -> None:
    database = LateDatabase(settings)
    engine = database.engine()
    try:
        connecting = asyncio.create_task(connect_when_up(engine, timeout_seconds=30))
        await asyncio.sleep(0.3)
        assert not connecting.done(), "it gave up on a database that was not up yet"
        await database.open()
        connection = await connecting
        try:
            assert (await connection.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await connection.close()
    finally:
        await engine.dispose()
        await database.close()


async def test_a_job_does_not_wait_out_wrong_credentials(settings: Settings) -> None:
    database = LateDatabase(settings)
    await database.open()
    engine = database.engine(password="not-the-password")
    try:
        with pytest.raises(DBAPIError) as caught:
            await connect_when_up(engine, timeout_seconds=30)
    finally:
        await engine.dispose()
        await database.close()
    assert is_misconfigured(caught.value)
    assert database.relayed == 1, "it tried again with credentials that cannot work"


async def test_a_job_does_not_wait_out_a_server_without_the_tls_it_requires(
    settings: Settings,
) -> None:
    attempts = 0

    async def no_tls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # What a server without TLS answers to the client's SSLRequest: "N".
        nonlocal attempts
        attempts += 1
        await reader.readexactly(8)
        writer.write(b"N")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(no_tls, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = make_url(settings.database_dsn).set(
        drivername="postgresql+asyncpg", host="127.0.0.1", port=port
    )
    engine = create_async_engine(
        url.render_as_string(hide_password=False),
        poolclass=NullPool,
        connect_args={"ssl": "require"},
    )
    try:
        with pytest.raises(ConnectionError) as caught:
            await connect_when_up(engine, timeout_seconds=30)
    finally:
        await engine.dispose()
        server.close()
        await server.wait_closed()
    assert is_misconfigured(caught.value)
    assert attempts == 1, "it waited for TLS that the server does not have"


async def test_a_job_stops_waiting_for_the_database_at_its_timeout(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    database = LateDatabase(settings)  # never opened: refused until the end
    engine = database.engine()
    try:
        with caplog.at_level(logging.INFO), pytest.raises(TimeoutError, match=r"within 0\.5 s"):
            await connect_when_up(engine, timeout_seconds=0.5)
    finally:
        await engine.dispose()
        await database.close()
    messages = [record.getMessage() for record in caplog.records]
    assert "waiting for the database" in messages, "it gave up without retrying"


async def test_a_job_stops_waiting_for_a_database_that_never_answers(settings: Settings) -> None:
    # Accepts the connection and never says a word: each attempt hangs; the wait does not.
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    url = make_url(settings.database_dsn).set(
        drivername="postgresql+asyncpg", host="127.0.0.1", port=port
    )
    engine = create_async_engine(url.render_as_string(hide_password=False), poolclass=NullPool)
    try:
        with pytest.raises(TimeoutError, match=r"within 0\.5 s"):
            await connect_when_up(engine, timeout_seconds=0.5)
    finally:
        await engine.dispose()
        silent.close()
        for writer in held:
            writer.close()
        await silent.wait_closed()


def test_a_certificate_that_does_not_verify_is_a_misconfiguration() -> None:
    assert is_misconfigured(ssl.SSLCertVerificationError("certificate verify failed"))

"""PostgreSQL: the async engine, its lifecycle, the per-request connection and session,
and what a driver failure means for the client (dependency unavailable, or a bug).

Two ways to use the database in a request, sharing one pool:

- ``ConnectionDep``: a connection in autocommit mode, for a request whose work is one
  statement (a read, or one INSERT/UPDATE/DELETE, which PostgreSQL runs atomically on its
  own). One round trip per statement: no BEGIN, no COMMIT or ROLLBACK, no ORM identity
  map to fill.
- ``SessionDep``: an ORM session in a transaction, for a unit of work of several
  statements that must commit or fail together (two BEGIN/COMMIT round trips more).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack
from typing import Annotated, Any
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
from fastapi import Depends, Request
from sqlalchemy import CursorResult, Executable, event, text
from sqlalchemy.engine import URL, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from {{ cookiecutter.package_name }}.errors import Dependency
from {{ cookiecutter.package_name }}.settings import Settings

logger = logging.getLogger(__name__)

# A server that has not answered this long after its own statement_timeout should have
# cancelled the statement is hung or gone: the client gives up and reports it unavailable.
CLIENT_TIMEOUT_GRACE_SECONDS = 2.0

# SQLSTATE classes and codes that mean "the database cannot serve right now", from the
# PostgreSQL error code appendix: connection exceptions (08), insufficient resources
# (53: too many connections, out of memory or disk), and the operator interventions that
# end or refuse sessions (admin/crash shutdown, cannot connect now). 57014
# (query_canceled, e.g. statement_timeout) is deliberately absent: a slow query is a bug.
# Which server errors mean "retry later" (503 with Retry-After): the statement had no
# effect, and the same request can succeed once the database has recovered. The
# README's "Database errors" table is this mapping; keep them together.
# 08: connection exceptions; 53: insufficient resources (too many connections, disk
# full, out of memory).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53")
UNAVAILABLE_SQLSTATES = frozenset(
    {
        # Shutting down, crashed, starting up, database dropped, idle session timeout.
        "57P01",
        "57P02",
        "57P03",
        "57P04",
        "57P05",
        # A read-only transaction: a primary demoted by a failover (or a replica).
        "25006",
        # Serialization failure and deadlock: the server rolled the transaction back.
        "40001",
        "40P01",
        # lock_timeout or NOWAIT: a lock held elsewhere (a migration) for now.
        "55P03",
    }
)
# invalid_authorization_specification (28000), invalid_password (28P01) and
# invalid_catalog_name (3D000, no such database): a misconfiguration, which is a 503 for
# the client and an ERROR for the operator.
MISCONFIGURATION_SQLSTATE_PREFIXES = ("28", "3D000")


class Base(DeclarativeBase):
    """Base class of every ORM model; Alembic reads its metadata."""


DIALECT = "postgresql+asyncpg"
# Query options that name where or as whom to connect: the DSN alone then says it.
CONNECTION_TARGET_OPTIONS = frozenset({"host", "port", "user", "dbname", "database", "service"})


def engine_url(dsn: str) -> URL:
    """The URL SQLAlchemy is given: what it shows of the database, never how to connect.

    asyncpg gets DATABASE_URL itself as its DSN (connect_args) and parses it, libpq options
    and all (database_url.py). This URL repeats only the user, host, port and database of
    a one-host DSN, which asyncpg then receives again as the same values: they name the
    database in the engine's repr and in what instrumentation reads off the engine
    (server address, database name). Never the password or the options. Several hosts,
    or the target named in the query: the dialect alone.
    """
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    named_in_query = {key for key, _ in parse_qsl(parts.query)} & CONNECTION_TARGET_OPTIONS
    if not parts.hostname or "," in hosts or named_in_query:
        return URL.create(DIALECT)
    return URL.create(
        DIALECT,
        username=unquote(parts.username) if parts.username else None,
        host=parts.hostname,
        port=parts.port,
        database=unquote(parts.path.removeprefix("/")) or None,
    )


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "dsn": settings.database_dsn,
        "timeout": settings.database_pool_timeout_seconds,
        # The server cancels a slow statement itself (a clean error, the connection
        # stays usable); the client-side limit only catches a server that stopped answering.
        "command_timeout": settings.database_statement_timeout_seconds
        + CLIENT_TIMEOUT_GRACE_SECONDS,
        # asyncpg merges these with the URL's own (application_name, options).
        "server_settings": {
            "statement_timeout": str(round(settings.database_statement_timeout_seconds * 1000)),
        },
    }
    if not settings.database_statement_cache:
        # PgBouncer in transaction mode hands each transaction to any server connection,
        # where a statement prepared on another one does not exist.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
    options: dict[str, Any] = {
        "pool_size": settings.database_pool_size,
        "max_overflow": settings.database_max_overflow,
        "pool_timeout": settings.database_pool_timeout_seconds,
        # No pool_pre_ping: it costs a round trip (three with asyncpg) on every checkout.
        # Dead connections are caught without one: see _discard_closed_connections, and the
        # one retry of idempotent reads in errors.py for the rare race that remains.
        "connect_args": connect_args,
        # A failed statement's error names its SQL, never the values bound to it
        # (request data: emails, tokens), in logs, spans and exceptions alike.
        "hide_parameters": True,
    }
    options.update(overrides)
    engine = create_async_engine(engine_url(settings.database_dsn), **options)
    event.listen(engine.sync_engine, "checkout", _discard_closed_connections)
    event.listen(engine.sync_engine, "handle_error", _replace_the_pool_after_a_silent_server)
    event.listen(engine.sync_engine, "invalidate", _note_a_statement_left_running)
    event.listen(engine.sync_engine, "close", _close_without_waiting)
    return engine


def create_migration_engine(settings: Settings) -> AsyncEngine:
    """The engine of the processes that migrate or wait for the schema, then exit
    (migrations/env.py, schema_gate.py): MIGRATION_DATABASE_URL, else DATABASE_URL.

    NullPool: one connection per use, nothing to keep warm. ``timeout`` bounds one
    connection attempt: a server that never answers it (packets dropped while it
    starts) is tried again by the caller, within its overall wait.
    """
    return create_async_engine(
        engine_url(settings.migration_dsn),
        poolclass=NullPool,
        # As the app's engine: a failed statement's values stay out of the log.
        hide_parameters=True,
        connect_args={
            "dsn": settings.migration_dsn,
            "timeout": settings.database_pool_timeout_seconds,
        },
    )


def _discard_closed_connections(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any
) -> None:
    """Refuse a pooled connection whose socket the server already closed.

    A restarting or failing-over server closes its sessions; asyncpg notices the closed
    socket in the event loop as soon as it happens, so this costs no round trip. Raising
    DisconnectionError makes the pool discard the connection and hand out another.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the server closed this pooled connection")


def _replace_the_pool_after_a_silent_server(context: ExceptionContext) -> None:
    """A statement asyncpg gave up on (its command_timeout) ends every pooled connection.

    The server did not answer CLIENT_TIMEOUT_GRACE_SECONDS after its own statement_timeout
    should have ended the statement: it is gone, hung or cut off, for the other pooled
    connections as much as for this one. SQLAlchemy counts the timeout as a disconnect but
    replaces this connection only, so each other dead connection cost the next request
    that took it the same full timeout, one request after another. Invalidating the pool
    instead makes each connection opened before now reconnect at its next checkout: while
    the server is away that connect fails within the pool timeout, and once it is back the
    request succeeds. A server that was only slow costs a reconnect per connection.
    """
    if (
        context.connection is not None
        and context.is_disconnect
        and isinstance(context.original_exception, TimeoutError)
    ):
        context.invalidate_pool_on_disconnect = True


# Set in a pool record's info while its connection is invalidated with a statement
# possibly still running on the server (see _close_without_waiting).
_STATEMENT_LEFT_RUNNING = "statement_left_running"


def _note_a_statement_left_running(
    dbapi_connection: Any, record: ConnectionPoolEntry, exception: BaseException | None
) -> None:
    if isinstance(exception, asyncio.CancelledError):
        record.info[_STATEMENT_LEFT_RUNNING] = True


def _close_without_waiting(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """Drop a connection the pool closes without waiting for the server to answer.

    SQLAlchemy's asyncpg dialect closes politely: it sends Terminate, then waits for the
    server to close its end, up to 2 s for an invalidated connection and up to the
    statement timeout + grace when the pool is disposed. A silent server never answers,
    so each dead connection added those seconds to a request, or to the shutdown (one
    connection after another, each an ERROR traceback "Exception closing connection").
    asyncpg's terminate() sends the same Terminate and closes the socket at once: nothing
    is lost for an idle connection. A connection whose request was cancelled mid-statement
    keeps the polite close, which first asks the server to cancel that statement.
    """
    if not record.info.pop(_STATEMENT_LEFT_RUNNING, False):
        dbapi_connection.driver_connection.terminate()


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def connect_when_up(engine: AsyncEngine, timeout_seconds: float) -> AsyncConnection:
    """A connection, once the database accepts one: waits at most ``timeout_seconds``.

    For a job that starts together with the database (migrations/env.py): compose starts
    the migrate job as soon as the database's container has started, rather than after its
    next health check, and Kubernetes rolls both out at once; the job connects the moment
    the server accepts, instead of failing. Only "not accepting connections yet" is waited
    out (refused, starting up, not resolvable yet, no answer): wrong credentials, a
    certificate that does not verify and anything else fail at once. Each attempt gets
    what is left of the time, so a server that never answers cannot stretch the wait. A
    dozen lines, so written here rather than adding a retry library.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    pause = 0.05
    waited = False
    while True:
        connection = engine.connect()
        attempt = asyncio.timeout_at(deadline)
        try:
            async with attempt:
                await connection.start()
        except Exception as error:
            if attempt.expired():
                logger.error("the database did not accept a connection in time")
                raise TimeoutError(
                    f"the database did not accept a connection within {timeout_seconds} s"
                ) from error
            if not is_unavailable(error) or is_misconfigured(error):
                raise
            if not waited:
                logger.info("waiting for the database", extra={"error": repr(error)})
                waited = True
            # Never sleeps past the deadline; an attempt begun at it times out at once.
            await asyncio.sleep(max(0.0, min(pause, deadline - loop.time())))
            pause = min(pause * 2, 1.0)
            continue
        if waited:
            logger.info("the database accepted the connection")
        return connection


class ConnectionTurns:
    """Hands the pool's connections to requests in the order they asked for them.

    SQLAlchemy's async pool gives a returned connection to whichever task asks next, not
    to the one that waited longest (a woken waiter that lost the race queues again at the
    back), so with every connection busy a few requests waited many times longer than the
    rest: in the template's benchmark p99 was 19 times p50, 3 times with these turns.
    asyncio.Semaphore serves waiters first come, first served, with one permit per
    connection, and the pool's timeout applies to the wait for a turn. Only
    ConnectionDep takes turns: a session (SessionDep) and work outside requests use the
    pool as it is, so that no request ever holds one permit while it waits for another.
    """

    def __init__(self, settings: Settings) -> None:
        self._permits = asyncio.Semaphore(
            settings.database_pool_size + settings.database_max_overflow
        )
        self._timeout = settings.database_pool_timeout_seconds

    async def __aenter__(self) -> None:
        if not self._permits.locked():
            # A connection is free and nobody waits: taken at once, no timer to set.
            await self._permits.acquire()
            return
        try:
            async with asyncio.timeout(self._timeout):
                await self._permits.acquire()
        except TimeoutError:
            # The pool's own error for the same wait: a 503, like any exhausted pool.
            raise PoolTimeoutError(
                f"no database connection free within {self._timeout} s"
            ) from None

    async def __aexit__(self, *_: object) -> None:
        self._permits.release()


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """The same engine and pool, with connections that commit each statement on its own.

    The isolation level is an attribute of the driver's connection, set at checkout and
    reset at checkin: neither costs a round trip.
    """
    return engine.execution_options(isolation_level="AUTOCOMMIT")


class RequestConnection:
    """A request's autocommit connection, taken from the pool at its first statement.

    FastAPI runs a route's dependencies before it validates the request: a connection
    taken in the dependency itself would be checked out for a request then refused with
    a 422, and would turn that 422 into a 503 while the database is down.
    """

    def __init__(self, engine: AsyncEngine, turns: ConnectionTurns) -> None:
        self._engine = engine
        self._turns = turns
        self._resources = AsyncExitStack()
        self._connection: AsyncConnection | None = None

    async def execute(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> CursorResult[Any]:
        if self._connection is None:
            async with AsyncExitStack() as taking:
                await taking.enter_async_context(self._turns)
                # A connect that fails gives the turn back at once (leaving this block),
                # not when the request ends: a handler that retries, or the requests
                # waiting behind it, would otherwise wait for a turn held for nothing.
                self._connection = await taking.enter_async_context(self._engine.connect())
                await self._resources.enter_async_context(taking.pop_all())
        return await self._connection.execute(statement, parameters)

    async def close(self) -> None:
        """Back to the pool, then the turn to the next request. A connection the server
        dropped is invalidated by the pool on its way back, without raising here: nothing
        is left to roll back, each statement committed or failed on its own."""
        self._connection = None
        await self._resources.aclose()


async def get_connection(request: Request) -> AsyncIterator[RequestConnection]:
    """One autocommit connection per request, back in the pool when the endpoint returns."""
    connection = RequestConnection(
        request.app.state.autocommit_engine, request.app.state.connection_turns
    )
    try:
        yield connection
    finally:
        await connection.close()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, closed as soon as the endpoint returns.

    Uncommitted work is rolled back by the close. A close that fails because the server
    dropped the connection must not turn the response already chosen into an error: it is
    logged, and the connection is invalidated instead of returned to the pool.
    """
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    session = sessionmaker()
    try:
        yield session
    finally:
        await close_quietly(session)


async def close_quietly(session: AsyncSession) -> None:
    try:
        await session.close()
    except Exception as error:
        if is_unavailable(error):
            logger.debug("session closed on a dead connection", exc_info=True)
        else:
            logger.exception("closing the database session failed")
        try:
            await session.invalidate()
        except Exception:
            logger.debug("invalidating the session failed too", exc_info=True)


# scope="function": released when the endpoint returns, not after the response is sent,
# so a slow client or a long body never holds a pooled connection (idle in transaction).
ConnectionDep = Annotated[RequestConnection, Depends(get_connection, scope="function")]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _raised_by_driver(error: BaseException) -> bool:
    """Whether a bare OS-level error came out of the driver (connect, socket read).

    asyncpg raises refused connections, DNS failures and its client-side timeouts as the
    builtin OSError/TimeoutError, unwrapped; the same types from the service's own code
    (a file, a timeout of its own) are bugs, so the frames they passed through decide.
    """
    frame = error.__traceback__
    while frame is not None:
        module = frame.tb_frame.f_globals.get("__name__", "")
        if module.startswith(("asyncpg.", "sqlalchemy.")):
            return True
        frame = frame.tb_next
    return False


def _chain(error: BaseException) -> list[BaseException]:
    """The error and what caused it: SQLAlchemy wraps the driver's exception."""
    found: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in found:
        found.append(current)
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return found


def is_unavailable(error: BaseException) -> bool:
    """True when the database, not this service, is why the request failed."""
    for cause in _chain(error):
        if isinstance(cause, PoolTimeoutError):
            return True  # every pooled connection busy, or the server not accepting more
        if isinstance(cause, DBAPIError) and cause.connection_invalidated:
            return True  # SQLAlchemy saw the connection drop under a statement
        if isinstance(cause, asyncpg.PostgresError):
            sqlstate = cause.sqlstate or ""
            prefixes = (*UNAVAILABLE_SQLSTATE_CLASSES, *MISCONFIGURATION_SQLSTATE_PREFIXES)
            if sqlstate.startswith(prefixes) or sqlstate in UNAVAILABLE_SQLSTATES:
                return True
        if isinstance(cause, OSError) and _raised_by_driver(cause):
            return True  # refused, reset, DNS failure, connect or command timeout
    return False


def is_misconfigured(error: BaseException) -> bool:
    """Wrong credentials, no such database, a server certificate that does not verify
    (sslmode=verify-ca/verify-full) or a server without the TLS that sslmode requires:
    nothing but an operator's fix makes these go away."""
    return any(
        isinstance(cause, ssl.SSLCertVerificationError)
        # asyncpg has no class of its own for this: a plain ConnectionError (an OSError,
        # which reads as "not up yet") with this message.
        or (isinstance(cause, ConnectionError) and "rejected SSL upgrade" in str(cause))
        or (
            isinstance(cause, asyncpg.PostgresError)
            and (cause.sqlstate or "").startswith(MISCONFIGURATION_SQLSTATE_PREFIXES)
        )
        for cause in _chain(error)
    )


def is_stale_connection(error: BaseException) -> bool:
    """A pooled connection the server closed between checkout and first use.

    Retrying on a fresh connection is safe for an idempotent read: the statement never
    reached a live server session.
    """
    return any(isinstance(c, DBAPIError) and c.connection_invalidated for c in _chain(error))


FAILURES = Dependency(
    name="database",
    unavailable=is_unavailable,
    misconfigured=is_misconfigured,
    stale_connection=is_stale_connection,
)

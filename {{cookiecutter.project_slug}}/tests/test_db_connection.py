"""The per-request autocommit connection (db.ConnectionDep) and the turns that hand out
the pool's connections in arrival order (db.ConnectionTurns)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from httpx import ASGITransport, AsyncClient
from sqlalchemy import make_url, text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from {{ cookiecutter.package_name }}.db import (
    ConnectionDep,
    ConnectionTurns,
    RequestConnection,
    SessionDep,
    create_engine,
)
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

# now() is when the current transaction started: equal for two statements only when
# they ran in one transaction.
TWO_STATEMENTS = (text("SELECT now()"), text("SELECT pg_sleep(0.01)"), text("SELECT now()"))


async def test_a_connection_commits_each_statement_on_its_own(
    app: FastAPI, client: AsyncClient
) -> None:
    @app.get("/connection")
    async def with_connection(connection: ConnectionDep) -> dict[str, bool]:
        first, _, second = [(await connection.execute(s)).scalar() for s in TWO_STATEMENTS]
        return {"one_transaction": first == second}

    @app.get("/session")
    async def with_session(session: SessionDep) -> dict[str, bool]:
        first, _, second = [(await session.execute(s)).scalar() for s in TWO_STATEMENTS]
        return {"one_transaction": first == second}

    assert (await client.get("/connection")).json() == {"one_transaction": False}
    assert (await client.get("/session")).json() == {"one_transaction": True}


async def test_a_request_connection_takes_its_turn_and_gives_it_back(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    events: list[str] = []

    class RecordedTurns(ConnectionTurns):
        async def __aenter__(self) -> None:
            events.append("turn taken")
            await super().__aenter__()

        async def __aexit__(self, *exc: object) -> None:
            events.append("turn given back")
            await super().__aexit__(*exc)

    app.state.connection_turns = RecordedTurns(settings)

    @app.get("/turn")
    async def turn(connection: ConnectionDep) -> None:
        await connection.execute(text("SELECT 1"))
        events.append("query")

    assert (await client.get("/turn")).status_code == 200
    assert events == ["turn taken", "query", "turn given back"]


async def test_a_write_on_the_connection_is_committed_without_a_commit(
    app: FastAPI, client: AsyncClient
) -> None:
    @app.post("/write")
    async def write(connection: ConnectionDep) -> None:
        await connection.execute(text("CREATE TABLE written_alone (n int)"))

    try:
        assert (await client.post("/write")).status_code == 200
        async with app.state.engine.connect() as connection:
            found = await connection.execute(text("SELECT to_regclass('written_alone')"))
            assert found.scalar_one() is not None
    finally:
        async with app.state.engine.begin() as connection:
            await connection.execute(text("DROP TABLE IF EXISTS written_alone"))


async def test_the_connection_is_released_before_the_response_is_sent(
    app: FastAPI, client: AsyncClient
) -> None:
    seen: list[int] = []

    @app.get("/streamed")
    async def streamed(connection: ConnectionDep) -> StreamingResponse:
        await connection.execute(text("SELECT 1"))

        async def body() -> AsyncIterator[bytes]:
            seen.append(app.state.engine.pool.checkedout())
            yield b"done"

        return StreamingResponse(body())

    assert (await client.get("/streamed")).text == "done"
    assert seen == [0], "the request's connection was still checked out while streaming"


def one_connection(settings: Settings, timeout: float = 5.0) -> Settings:
    return settings.model_copy(
        update={
            "database_pool_size": 1,
            "database_max_overflow": 0,
            "database_pool_timeout_seconds": timeout,
        }
    )


async def test_turns_are_taken_in_arrival_order(settings: Settings) -> None:
    turns = ConnectionTurns(one_connection(settings))
    order: list[int] = []
    first_may_finish = asyncio.Event()

    async def first() -> None:
        async with turns:
            await first_may_finish.wait()

    async def request(number: int) -> None:
        async with turns:
            order.append(number)
            await asyncio.sleep(0)  # holds its turn across an await, like a query

    holder = asyncio.create_task(first())
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(request(n)) for n in range(5)]
    await asyncio.sleep(0)
    first_may_finish.set()
    await asyncio.sleep(0)
    # Arrives just as the turn passes on: it must not go ahead of those already waiting.
    late = asyncio.create_task(request(99))
    await asyncio.gather(holder, *waiting, late)
    assert order == [0, 1, 2, 3, 4, 99]


async def test_waiting_past_the_pool_timeout_for_a_turn_is_an_error(settings: Settings) -> None:
    turns = ConnectionTurns(one_connection(settings, timeout=0.05))
    async with turns:
        with pytest.raises(PoolTimeoutError):
            async with turns:
                pass
    async with turns:  # the permit was given back, not lost with the timeout
        pass


async def test_a_failed_connect_gives_the_turn_back_at_once(settings: Settings) -> None:
    turns = ConnectionTurns(one_connection(settings, timeout=0.05))
    unreachable = create_engine(
        settings.model_copy(update={"database_url": "postgresql+asyncpg://app:x@127.0.0.1:1/app"})
    )
    engine = create_engine(settings)
    failed = RequestConnection(unreachable, turns)
    try:
        with pytest.raises(OSError):
            await failed.execute(text("SELECT 1"))
        # The failed request has not ended yet; the next one gets the turn anyway.
        following = RequestConnection(engine, turns)
        try:
            assert (await following.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await following.close()
    finally:
        await failed.close()
        await unreachable.dispose()
        await engine.dispose()


async def test_a_request_that_waited_too_long_for_a_connection_is_a_503(
    settings: Settings,
) -> None:
    app = create_app(one_connection(settings, timeout=0.2))
    may_finish = asyncio.Event()

    @app.get("/holds")
    async def holds(connection: ConnectionDep) -> None:
        await connection.execute(text("SELECT 1"))
        await may_finish.wait()

    @app.get("/reads")
    async def reads(connection: ConnectionDep) -> None:
        await connection.execute(text("SELECT 1"))

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            # The pool's one connection opened first: the short timeout is for the wait.
            assert (await http.get("/reads")).status_code == 200
            holding = asyncio.create_task(http.get("/holds"))
            await asyncio.sleep(0.05)
            waited = await http.get("/reads")
            may_finish.set()
            assert (await holding).status_code == 200
            assert (await http.get("/reads")).status_code == 200
    assert waited.status_code == 503
    assert waited.headers["retry-after"] == "5"


async def test_a_request_refused_with_422_takes_no_connection(settings: Settings) -> None:
    # The database is unreachable: a request that needed it would be a 503.
    down = make_url(settings.database_dsn).set(host="127.0.0.1", port=1)
    app = create_app(
        settings.model_copy(update={"database_url": down.render_as_string(hide_password=False)})
    )

    @app.get("/things/{thing_id}")
    async def thing(thing_id: int, connection: ConnectionDep) -> None:
        await connection.execute(text("SELECT 1"))

    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            refused = await http.get("/things/not-a-number")
            needed = await http.get("/things/1")
    assert refused.status_code == 422
    assert needed.status_code == 503

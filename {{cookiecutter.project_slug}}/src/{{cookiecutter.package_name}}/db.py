"""PostgreSQL: the async engine, its lifecycle and the per-request session."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from {{ cookiecutter.package_name }}.settings import Settings


class Base(DeclarativeBase):
    """Base class of every ORM model; Alembic reads its metadata."""


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database_url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        # Drop connections the server closed (failover, restart) before use.
        pool_pre_ping=True,
        # Bound how long a request can wait for a connection to a dead server,
        # and how long a statement may run.
        pool_timeout=settings.database_pool_timeout_seconds,
        connect_args={
            "timeout": settings.database_pool_timeout_seconds,
            "command_timeout": settings.database_command_timeout_seconds,
        },
    )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def get_session(request: Request) -> AsyncGenerator[AsyncSession]:
    """One session per request; rolled back if the handler raises."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]

"""The application factory and the lifespan that owns every connection pool."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import metadata

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
{%- if cookiecutter.use_postgres %}
from sqlalchemy.ext.asyncio import async_sessionmaker
{%- endif %}

from {{ cookiecutter.package_name }} import health
from {{ cookiecutter.package_name }}.api import api_router
{%- if cookiecutter.use_redis %}
from {{ cookiecutter.package_name }}.cache import create_redis
{%- endif %}
{%- if cookiecutter.use_postgres %}
from {{ cookiecutter.package_name }}.db import create_engine
{%- endif %}
from {{ cookiecutter.package_name }}.errors import install_error_handling
from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.settings import Settings, get_settings

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the pools when a worker starts and close them when it stops.

    Nothing connects here: pools connect lazily, so a worker starts even while
    a dependency is down and /health/ready reports it instead of a crash loop.
    """
    settings: Settings = app.state.settings
{%- if cookiecutter.use_postgres %}
    app.state.engine = create_engine(settings)
    app.state.sessionmaker = async_sessionmaker(app.state.engine, expire_on_commit=False)
{%- endif %}
{%- if cookiecutter.use_redis %}
    app.state.redis = create_redis(settings)
{%- endif %}
    logger.info("started", extra={"environment": settings.environment})
    try:
        yield
    finally:
{%- if cookiecutter.use_redis %}
        await app.state.redis.aclose()
{%- endif %}
{%- if cookiecutter.use_postgres %}
        await app.state.engine.dispose()
{%- endif %}
        logger.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level)
    # Name, summary and version have one home: pyproject.toml.
    distribution = metadata("{{ cookiecutter.project_slug }}")
    app = FastAPI(
        title={{ cookiecutter.project_name | jsonify }},
        summary=distribution["Summary"],
        version=distribution["Version"],
        lifespan=lifespan,
        # The interactive docs are for developers, not the public internet.
        docs_url=None if settings.environment == "production" else "/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    install_error_handling(app)
    app.include_router(health.router)
    app.include_router(api_router)
    return app

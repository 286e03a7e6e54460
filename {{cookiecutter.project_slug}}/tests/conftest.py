"""Fixtures: the app with its lifespan, wired to the services of the chosen options.

Each option that brings a service owns a plugin module under ``tests/plugins/``
(its fixtures, and the settings that point the app at its test instance); the
list below is the one place that names them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

pytest_plugins = [
    "tests.plugins",
{%- if cookiecutter.use_postgres %}
    "tests.plugins.db",
{%- endif %}
{%- if cookiecutter.use_redis %}
    "tests.plugins.cache",
{%- endif %}
{%- if cookiecutter.use_worker %}
    "tests.plugins.worker",
{%- endif %}
{%- if cookiecutter.auth == "oidc" %}
    "tests.plugins.auth",
{%- endif %}
{%- if cookiecutter.use_tracing %}
    "tests.plugins.tracing",
{%- endif %}
]


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for one test: nothing read from .env, each service at its test instance."""
    overrides: dict[str, Any] = {}
    for contributed in request.config.hook.pytest_app_settings(request=request):
        overrides.update(contributed)
    return Settings(_env_file=None, environment="test", **overrides)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client_headers(request: pytest.FixtureRequest) -> dict[str, str]:
    """What every request of ``client`` carries, as the plugins say (credentials...)."""
    headers: dict[str, str] = {}
    for contributed in request.config.hook.pytest_client_headers(request=request):
        headers.update(contributed)
    return headers


@pytest.fixture
async def client(
    app: FastAPI, client_headers: dict[str, str], request: pytest.FixtureRequest
) -> AsyncIterator[AsyncClient]:
    """An HTTP client for the app, with its lifespan (pools) running."""
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(
            transport=transport, base_url="http://test", headers=client_headers
        ) as http:
            yield http
        # Each test starts from empty services; the pools are still open here.
        for reset in request.config.hook.pytest_app_reset(app=app):
            await reset

"""The hooks an option-owned test plugin may implement (see ``tests/plugins/__init__.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence

from fastapi import FastAPI
from pytest import FixtureRequest


def pytest_app_settings(request: FixtureRequest) -> Mapping[str, object] | None:
    """Settings fields this option sets for the app under test (a service's test URL...).

    Called by the ``settings`` fixture for every test that builds the app; get
    the plugin's own fixtures with ``request.getfixturevalue``.
    """


def pytest_client_headers(request: FixtureRequest) -> Mapping[str, str] | None:
    """Headers every request of the ``client`` fixture carries (credentials...)."""


def pytest_app_reset(app: FastAPI) -> Awaitable[None] | None:
    """Wipe what one test left behind (rows, keys...); awaited while the app's pools are open."""


def pytest_compose_services() -> Sequence[str] | None:
    """The compose.yaml services that the plugin's fixtures talk to."""

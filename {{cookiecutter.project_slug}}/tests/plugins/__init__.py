"""Option-owned test plugins: each option that the tests must know about owns one module here.

``tests/conftest.py`` lists this package and the chosen modules in
``pytest_plugins``; an option's module is created or pruned with the option.
A module defines its own fixtures and implements what it needs of the hooks in
``hookspecs.py``: the settings it gives the app under test (such as its test
service's URL), the headers of the test client's requests, what to wipe after each
test, and the compose services it needs. Adding an option's
plugin is one new module, one line in ``pytest_plugins`` and its manifest entry.

Tests that build the app (they use the ``settings`` fixture, directly or
through ``app`` and ``client``) are marked ``services`` here as soon as a
plugin needs a compose service, so ``pytest -m "not services"`` runs the
others without Docker.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from . import hookspecs


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_collection_modifyitems(session: pytest.Session) -> None:
    if not compose_services(session.config):
        return
    for test in session.items:
        if "settings" in getattr(test, "fixturenames", ()):
            test.add_marker(pytest.mark.services)


def compose_services(config: pytest.Config) -> list[str]:
    return sorted({name for names in config.hook.pytest_compose_services() for name in names})


def unreachable(config: pytest.Config, what: str, where: str, error: BaseException) -> NoReturn:
    """Stop the whole run with one line: every test that builds the app needs the service."""
    start = " ".join(["docker compose up -d --wait", *compose_services(config)])
    problem = f"{what} at {where} is unreachable ({type(error).__name__})"
    pytest.exit(f"{problem}; start them with: {start}", 1)

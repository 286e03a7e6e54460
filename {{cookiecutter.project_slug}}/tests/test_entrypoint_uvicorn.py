"""``python -m {{ cookiecutter.package_name }}``: the environment is checked before uvicorn starts."""

from __future__ import annotations

import runpy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from {{ cookiecutter.package_name }} import __main__ as entrypoint
from {{ cookiecutter.package_name }}.settings import ConfigurationError


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[dict[str, Any]]]:
    """Records each uvicorn start (its arguments) instead of serving."""
    # Away from the checkout's .env: only the environment the test sets counts.
    monkeypatch.chdir(tmp_path)
    calls: list[dict[str, Any]] = []

    def fake_run(app: str, **options: Any) -> None:
        calls.append({"app": app, **options})

    monkeypatch.setattr(uvicorn, "run", fake_run)
    yield calls


def test_a_bad_environment_stops_before_uvicorn_starts(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "http")
    with pytest.raises(ConfigurationError, match="PORT"):
        entrypoint.main()
    assert started == []


def test_uvicorn_serves_the_app_factory_as_the_settings_say(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    monkeypatch.setenv("KEEPALIVE_SECONDS", "75")
    entrypoint.main()
    [options] = started
    assert options["app"] == "{{ cookiecutter.package_name }}.main:create_app"
    assert options["factory"] is True
    assert (options["port"], options["workers"]) == (9123, 3)
    assert options["forwarded_allow_ips"] == "10.0.0.1"
    assert options["timeout_keep_alive"] == 75
    # Our JSON logging, not uvicorn's own configuration.
    assert options["log_config"] is None


def test_run_as_a_module_it_starts_uvicorn(
    started: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # runpy executes the module afresh; a stale import would make it warn.
    monkeypatch.delitem(sys.modules, entrypoint.__name__)
    runpy.run_module(entrypoint.__name__.rpartition(".")[0], run_name="__main__")
    assert len(started) == 1

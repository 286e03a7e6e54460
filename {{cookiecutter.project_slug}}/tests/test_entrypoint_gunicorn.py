"""``python -m {{ cookiecutter.package_name }}``: the environment is checked before gunicorn starts."""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gunicorn.app import wsgiapp
from gunicorn.config import Config
from gunicorn.glogging import Logger

from {{ cookiecutter.package_name }} import __main__ as entrypoint
from {{ cookiecutter.package_name }}.gunicorn_server import Worker
from {{ cookiecutter.package_name }}.settings import ConfigurationError


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[list[str]]]:
    """Records each gunicorn start (its arguments) instead of serving."""
    # Away from the checkout's .env: only the environment the test sets counts.
    monkeypatch.chdir(tmp_path)
    calls: list[list[str]] = []

    def fake_run(prog: str | None = None) -> None:
        assert prog == "gunicorn"
        calls.append(sys.argv[1:])

    monkeypatch.setattr(wsgiapp, "run", fake_run)
    monkeypatch.setattr(sys, "argv", ["python -m"])
    yield calls


def test_a_bad_environment_stops_before_gunicorn_starts(
    started: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "many")
    with pytest.raises(ConfigurationError, match="WEB_CONCURRENCY"):
        entrypoint.main()
    assert started == []


def test_a_valid_environment_starts_gunicorn_with_its_config_file(
    started: list[list[str]],
) -> None:
    entrypoint.main()
    assert started == [["--config", "gunicorn.conf.py"]]


def test_run_as_a_module_it_starts_gunicorn(
    started: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # runpy executes the module afresh; a stale import would make it warn.
    monkeypatch.delitem(sys.modules, entrypoint.__name__)
    runpy.run_module(entrypoint.__name__.rpartition(".")[0], run_name="__main__")
    assert started == [["--config", "gunicorn.conf.py"]]


def test_the_config_file_is_valid_for_gunicorn_with_a_grace_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each setting passes gunicorn's own validation (a float graceful_timeout does not)."""
    monkeypatch.setenv("GRACEFUL_TIMEOUT_SECONDS", "7")
    config = Config()
    namespace = runpy.run_path("gunicorn.conf.py")
    for name, value in namespace.items():
        if name in config.settings:
            config.set(name, value)
    assert config.graceful_timeout == 7
    assert config.worker_class is Worker
    # What the worker tells uvicorn: requests get their share of that grace.
    worker = Worker(0, os.getpid(), [], None, 30, config, Logger(config))
    try:
        assert worker.config.timeout_graceful_shutdown == 5  # four fifths of 7, whole seconds
    finally:
        worker.tmp.close()  # the heartbeat file every gunicorn worker opens

"""The container HEALTHCHECK against a stand-in server: exit 0 only for a 200 from /health/live."""

from __future__ import annotations

import re
import runpy
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from {{ cookiecutter.package_name }} import healthcheck
from {{ cookiecutter.package_name }}.settings import Settings


class Answers:
    """What the stand-in server answers, and the paths it was asked for."""

    def __init__(self) -> None:
        self.status = 200
        self.paths: list[str] = []


@pytest.fixture
def answers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Answers]:
    """A local HTTP server on a free port, which PORT points the healthcheck at."""
    state = Answers()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.paths.append(self.path)
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the test output is for the assertions."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PORT", str(server.server_address[1]))
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_live_service_is_healthy(answers: Answers) -> None:
    assert healthcheck.main() == 0
    assert answers.paths == ["/health/live"]


@pytest.mark.parametrize("status", [204, 500, 503])
def test_any_other_answer_is_unhealthy(answers: Answers, status: int) -> None:
    answers.status = status
    assert healthcheck.main() == 1


def test_nothing_listening_is_unhealthy(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("PORT", str(free_port))
    assert healthcheck.main() == 1


def test_a_proxy_in_the_environment_is_not_used(
    answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 1: a proxy there would refuse the connection and fail the check.
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://127.0.0.1:1")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert healthcheck.main() == 0


def test_run_as_a_module_it_exits_with_the_result(
    answers: Answers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the Dockerfile's HEALTHCHECK runs: python -m <package>.healthcheck.
    monkeypatch.delitem(sys.modules, healthcheck.__name__)
    answers.status = 503
    with pytest.raises(SystemExit) as caught:
        runpy.run_module(healthcheck.__name__, run_name="__main__")
    assert caught.value.code == 1


def test_without_port_it_asks_the_servers_default_port_within_dockers_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check answers before Docker's HEALTHCHECK --timeout would cut it off, and
    without PORT it asks the port the server listens on by default."""
    monkeypatch.delenv("PORT", raising=False)
    asked: list[tuple[str, float]] = []

    class Opener:
        def open(self, url: str, timeout: float) -> object:
            asked.append((url, timeout))
            raise OSError("stand-in: nothing listens")

    monkeypatch.setattr(urllib.request, "build_opener", lambda *handlers: Opener())
    assert healthcheck.main() == 1
    ((url, timeout),) = asked
    assert url == f"http://127.0.0.1:{Settings.model_fields['port'].default}/health/live"
    docker = re.search(r"HEALTHCHECK .*--timeout=(\d+)s", Path("Dockerfile").read_text())
    assert docker is not None
    assert 0 < timeout < int(docker[1])

"""Logs, metrics and traces of the generated service, checked on real servers.

The access-log cases run each server choice on this machine (no Docker); the
stack cases build the default service with tracing on, run it with three
workers next to an OTLP/HTTP receiver, and read what a scrape and a trace show.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.compose import STACKS_KEY, ComposeStack
from tests.helpers import VARIANTS, bake, require_docker, run

# --- the access log under each server (host processes) ---------------------------------------


@pytest.fixture(scope="module", params=["default", "uvicorn"])
def server_project(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    """A baked project (gunicorn or uvicorn) with its locked runtime installed."""
    variant: str = request.param
    project = bake(tmp_path_factory.mktemp(f"access-{variant}"), **VARIANTS[variant])
    # Bytecode now, as the image does at build time: workers start in seconds.
    run(["uv", "sync", "--locked", "--no-dev", "--compile-bytecode"], project)
    return variant, project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_and_collect(project: Path, env: dict[str, str], requests: Callable[[str], None]) -> str:
    """Start the image's command on the host, run ``requests``, stop it, return its output."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    output = project / f"server-{uuid.uuid4().hex[:6]}.log"
    environment = {
        **os.environ,
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(project / "metrics"),
        **env,
    }
    environment.pop("VIRTUAL_ENV", None)
    with output.open("w") as sink:
        server = subprocess.Popen(
            [str(project / ".venv" / "bin" / "python"), "-m", "my_service"],
            cwd=project, env=environment, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if httpx.get(f"{base}/health/live", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert server.poll() is None, output.read_text()
                assert time.monotonic() < deadline, "the server did not start\n" + output.read_text()
                time.sleep(0.2)
            requests(base)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=40)
    return output.read_text()


def send_marked_requests(base: str) -> None:
    for n in range(5):
        headers = {"X-Request-ID": f"marked-{n}", "User-Agent": "obs-test"}
        httpx.get(f"{base}/health/live", headers=headers, timeout=5)
    httpx.get(f"{base}/no/such/page", headers={"X-Request-ID": "marked-404"}, timeout=5)


@pytest.mark.xdist_group("observability-host")
@pytest.mark.parametrize(("level", "expected"), [("INFO", 6), ("WARNING", 0)])
def test_the_app_writes_the_only_access_lines_and_log_level_governs_them(
    server_project: tuple[str, Path], level: str, expected: int
) -> None:
    variant, project = server_project
    output = serve_and_collect(
        project, {"LOG_LEVEL": level, "ACCESS_LOG_PROBES": "true"}, send_marked_requests
    )
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    # No server access line in any form: uvicorn's, gunicorn's, or as plain text.
    assert not [line for line in lines if line["logger"] in {"uvicorn.access", "gunicorn.access"}]
    assert not [line for line in lines if "HTTP/1.1" in str(line["message"])], variant
    marked = [
        line
        for line in lines
        if line["logger"] == "my_service.access" and str(line.get("request_id")).startswith("marked")
    ]
    assert len(marked) == expected, f"{variant} at {level}: {marked}"
    if expected:
        by_id = {line["request_id"]: line for line in marked}
        assert by_id["marked-0"]["route"] == "/health/live"
        assert by_id["marked-0"]["status"] == 200
        assert by_id["marked-0"]["user_agent"] == "obs-test"
        assert by_id["marked-0"]["client"] == "127.0.0.1"
        assert by_id["marked-404"]["route"] is None
        assert by_id["marked-404"]["status"] == 404

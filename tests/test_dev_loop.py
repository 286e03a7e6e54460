"""The generated service's dev loop: Compose watch syncs src/ into the running container."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.compose import ComposeStack
from tests.helpers import VARIANTS, bake

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("docker-watch")]

WATCH_TIMEOUT_SECONDS = 90


def poll_until(stack: ComposeStack, path: str, expected: dict[str, str]) -> float:
    """Seconds until ``path`` answers ``expected``; fails after WATCH_TIMEOUT_SECONDS."""
    start = time.monotonic()
    last: object = None
    while time.monotonic() - start < WATCH_TIMEOUT_SECONDS:
        try:
            response = stack.get(path, timeout=2)
            last = (response.status_code, response.text)
            if response.status_code == 200 and response.json() == expected:
                return time.monotonic() - start
        except Exception as error:  # the worker is restarting: connection refused or reset
            last = repr(error)
        time.sleep(0.5)
    raise AssertionError(f"{path} never answered {expected}; last: {last}")


def test_compose_watch_serves_a_changed_route_without_restarting(
    tmp_path: Path,
    compose_stack: Callable[[Path, str], ComposeStack],
    record_property: Callable[[str, object], None],
) -> None:
    project = bake(tmp_path, **VARIANTS["all-off"])
    stack = compose_stack(project, "watch")
    stack.env["COMPOSE_FILE"] = "compose.yaml:compose.dev.yaml"
    stack.up(build=True)
    started = stack.inspect("app")["State"]["StartedAt"]
    assert poll_until(stack, "/health/live", {"status": "ok"}) >= 0

    # `watch --no-up` attaches to the stack that is already running.
    watcher = subprocess.Popen(
        ["docker", "compose", "watch", "--no-up"],
        cwd=project,
        env={**os.environ, **stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # Before or after watch's initial sync, the edited file is what reaches the container.
        health = project / "src" / "my_service" / "health.py"
        before = health.read_text()
        after = before.replace(
            'status: Literal["ok"] = "ok"', 'status: Literal["ok", "watched"] = "watched"', 1
        )
        assert after != before
        health.write_text(after)
        seconds = poll_until(stack, "/health/live", {"status": "watched"})
        record_property("figure", f"edit in src/ served after {seconds:.1f} s")
    finally:
        watcher.terminate()
        try:
            output, _ = watcher.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            watcher.kill()
            output, _ = watcher.communicate()
    assert watcher.returncode is not None
    # Same container: the code changed in place, nothing was recreated or restarted.
    assert stack.inspect("app")["State"]["StartedAt"] == started, output

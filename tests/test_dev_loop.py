"""The generated service's dev loop: Compose watch syncs src/ into the running container."""

from __future__ import annotations

import os
import subprocess
import threading
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


class Watcher:
    """`docker compose watch` in the background, its output collected line by line."""

    def __init__(self, stack: ComposeStack) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            # --no-up: attach to the stack that is already running.
            ["docker", "compose", "watch", "--no-up"],
            cwd=stack.project,
            env={**os.environ, **stack.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str) -> None:
        """Until watch prints ``text`` (it watches from then on), or it exits, or time runs out."""
        deadline = time.monotonic() + WATCH_TIMEOUT_SECONDS
        while time.monotonic() < deadline and self.process.poll() is None:
            if text in self.output():
                return
            time.sleep(0.2)
        raise AssertionError(f"watch never said {text!r}:\n{self.output()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.output()


def test_compose_watch_serves_a_changed_route_without_restarting(
    tmp_path: Path,
    compose_stack: Callable[[Path, str], ComposeStack],
    record_property: Callable[[str, object], None],
) -> None:
    # Its own name, so its image tag is not another test's `my-service:latest`.
    project = bake(tmp_path, **VARIANTS["all-off"], project_name="Watch Loop")
    stack = compose_stack(project, "watch")
    stack.env["COMPOSE_FILE"] = "compose.yaml:compose.dev.yaml"
    stack.up(build=True)
    started = stack.inspect("app")["State"]["StartedAt"]
    assert poll_until(stack, "/health/live", {"status": "ok"}) >= 0

    watcher = Watcher(stack)
    try:
        # Edits made before watch is watching would be missed.
        watcher.wait_for("Watch enabled")
        health = project / "src" / "watch_loop" / "health.py"
        before = health.read_text()
        after = before.replace(
            'status: Literal["ok"] = "ok"', 'status: Literal["ok", "watched"] = "watched"', 1
        )
        assert after != before
        health.write_text(after)
        try:
            seconds = poll_until(stack, "/health/live", {"status": "watched"})
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- docker compose watch\n{watcher.stop()}") from None
        record_property("figure", f"edit in src/ served after {seconds:.1f} s")
    finally:
        output = watcher.stop()
    # Same container: the code changed in place, nothing was recreated or restarted.
    assert stack.inspect("app")["State"]["StartedAt"] == started, output

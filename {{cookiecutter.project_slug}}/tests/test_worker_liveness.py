"""The worker's heartbeat, which Kubernetes' liveness probe reads: no Redis involved."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from {{ cookiecutter.package_name }} import worker_liveness
from {{ cookiecutter.package_name }}.worker_liveness import STALE_SECONDS, alive, beat


def test_a_missing_heartbeat_is_not_alive(tmp_path: Path) -> None:
    assert alive(tmp_path / "never-written") is False


def test_a_heartbeat_is_alive_until_it_is_stale(tmp_path: Path) -> None:
    heartbeat = tmp_path / "alive"
    heartbeat.touch()
    touched = heartbeat.stat().st_mtime
    assert alive(heartbeat, now=touched + STALE_SECONDS - 1) is True
    assert alive(heartbeat, now=touched + STALE_SECONDS) is False


async def test_the_beat_touches_the_file_until_the_worker_stops(tmp_path: Path) -> None:
    heartbeat = tmp_path / "alive"
    task = asyncio.create_task(beat(heartbeat, interval=3600))
    for _ in range(100):
        if heartbeat.exists():
            break
        await asyncio.sleep(0)
    assert heartbeat.exists()
    task.cancel()
    await settle(task)
    assert task.cancelled()


async def settle(task: asyncio.Task[None]) -> None:
    """Let the loop run until the task is done, or a few rounds (never waits on time)."""
    for _ in range(100):
        if task.done():
            return
        await asyncio.sleep(0)


async def test_start_and_stop_run_the_beat_beside_the_jobs() -> None:
    state = SimpleNamespace()
    await worker_liveness.start(state)
    await settle(state.heartbeat)
    assert not state.heartbeat.done()
    await worker_liveness.stop(state)
    await settle(state.heartbeat)
    assert state.heartbeat.cancelled()


def test_the_probe_command_exits_by_the_heartbeat(tmp_path: Path) -> None:
    """``python -m {{ cookiecutter.package_name }}.worker_liveness``, as the kubelet runs it."""
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "{{ cookiecutter.package_name }}.worker_liveness"]
    assert subprocess.run(command, env=env, check=False).returncode == 1  # noqa: S603
    heartbeat = tmp_path / "worker-alive"
    heartbeat.touch()
    assert subprocess.run(command, env=env, check=False).returncode == 0  # noqa: S603
    stale = time.time() - STALE_SECONDS - 1
    os.utime(heartbeat, (stale, stale))
    assert subprocess.run(command, env=env, check=False).returncode == 1  # noqa: S603


def test_importing_it_needs_no_temporary_directory() -> None:
    """The worker imports this module: a process that imports the worker without running
    it (a script, a container with no writable /tmp) must not need a temporary directory."""
    code = (
        "import tempfile\n"
        "def none(): raise FileNotFoundError('No usable temporary directory found')\n"
        "tempfile.gettempdir = none\n"
        "import {{ cookiecutter.package_name }}.worker_liveness\n"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # noqa: S603

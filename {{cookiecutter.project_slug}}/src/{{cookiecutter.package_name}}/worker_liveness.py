"""The worker's liveness: its event loop touches a file while it runs.

Kubernetes' livenessProbe on the worker (deploy/kubernetes/base/worker.yaml) runs
``python -m {{ cookiecutter.package_name }}.worker_liveness``, which succeeds while the file
is younger than STALE_SECONDS. A loop blocked that long (a job stuck in blocking code)
stops touching it, and the kubelet restarts the container; its unacknowledged job goes
to another worker. Redis plays no part: an outage of Redis is not this process's fault
and a restart would not end it (the readiness probe, ``worker health``, reports it).
Standard library only, so the probe costs a bare interpreter's start.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def heartbeat_file() -> Path:
    # In the container's /tmp: an in-memory volume in the pod, a tmpfs in compose. Found
    # when used, not on import: a process that imports the worker without running it
    # (a script, a container with no writable /tmp) needs no temporary directory.
    return Path(tempfile.gettempdir()) / "worker-alive"


INTERVAL_SECONDS = 5.0
# Twelve beats missed: far beyond a busy loop's hiccup, short enough that a stuck worker
# is replaced within the probe's own minute and a half.
STALE_SECONDS = 60.0


async def beat(path: Path | None = None, interval: float = INTERVAL_SECONDS) -> None:
    path = path or heartbeat_file()
    while True:
        path.touch()  # microseconds on the in-memory /tmp: no thread for it
        await asyncio.sleep(interval)


async def start(state: Any) -> None:
    """taskiq's WORKER_STARTUP handler: the beat runs beside the jobs, on their loop."""
    state.heartbeat = asyncio.create_task(beat())


async def stop(state: Any) -> None:
    """taskiq's WORKER_SHUTDOWN handler."""
    state.heartbeat.cancel()


def alive(path: Path | None = None, now: float | None = None) -> bool:
    try:
        touched = (path or heartbeat_file()).stat().st_mtime
    except FileNotFoundError:
        return False
    return (time.time() if now is None else now) - touched < STALE_SECONDS


if __name__ == "__main__":
    sys.exit(0 if alive() else 1)

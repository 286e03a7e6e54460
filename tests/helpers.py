"""Baking, running tools in a baked project, and Docker availability."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE_DIR = Path(__file__).resolve().parents[1]
TEMPLATE_PROJECT = TEMPLATE_DIR / "{{cookiecutter.project_slug}}"
COOKIECUTTER_JSON: dict[str, Any] = json.loads((TEMPLATE_DIR / "cookiecutter.json").read_text())
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

# Every value of every option appears at least once, plus all-on (default) and all-off.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "all-off": {
        "use_postgres": False,
        "use_redis": False,
        "use_rate_limit": False,
        "include_example_api": False,
        "use_kubernetes": False,
        "server": "uvicorn",
        "ci": "none",
        "license": "Proprietary",
        "use_metrics": False,
        "use_devcontainer": False,
        "auth": "none",
    },
    "py312-pg16-redis7-gitlab": {
        "python_version": "3.12",
        "postgres_version": "16",
        "redis_version": "7",
        "ci": "gitlab",
        "license": "Apache-2.0",
        # The example API open to every caller: auth=none's generated suite.
        "auth": "none",
    },
    "py314-pg18-bsd": {
        "python_version": "3.14",
        "postgres_version": "18",
        "license": "BSD-3-Clause",
    },
    # And the example API open to every caller on the stack end to end (auth=none).
    "no-redis": {"use_redis": False, "use_rate_limit": False, "auth": "none"},
    "no-postgres": {"use_postgres": False, "include_example_api": False, "use_tracing": True},
    # Also an import name that differs from the distribution name, tokens verified
    # by a uvicorn service whose only protected routes are its own, and a worker with
    # no job of its own (its suite, run by tests/test_service_suite.py, tests the worker).
    "no-example-api": {
        "include_example_api": False,
        "use_worker": True,
        "package_name": "svc_core",
        "use_tracing": True,
        "server": "uvicorn",
        "auth": "oidc",
    },
    # With the background worker (off by default), and Redis without rate limits
    # (uvicorn with them: no-example-api).
    "uvicorn": {"server": "uvicorn", "use_worker": True, "use_rate_limit": False},
}


def defaults() -> dict[str, Any]:
    """The answers a user gets by pressing enter at every prompt."""
    answers: dict[str, Any] = {}
    for key, value in COOKIECUTTER_JSON.items():
        if key.startswith("_"):
            continue
        answers[key] = value[0] if isinstance(value, list) else value
    answers["project_slug"] = "my-service"
    answers["package_name"] = "my_service"
    return answers


def bake(output_dir: Path, **extra: Any) -> Path:
    """Generate a project with the cookiecutter API, hooks included."""
    output_dir.mkdir(parents=True, exist_ok=True)
    project = cookiecutter(
        str(TEMPLATE_DIR), no_input=True, output_dir=str(output_dir), extra_context=extra
    )
    return Path(project)


def context_of(**extra: Any) -> dict[str, Any]:
    answers = defaults()
    answers.update(extra)
    return answers


def run(
    command: Sequence[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, and on failure fail the test with its whole output."""
    merged = {**os.environ, **(env or {})}
    # A baked project must not borrow the template's own virtual environment.
    merged.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        list(command),
        cwd=cwd,
        env=merged,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"`{' '.join(command)}` exited {result.returncode} in {cwd}\n"
            f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}",
            pytrace=False,
        )
    return result


@contextmanager
def machine_load(exclusive: bool) -> Iterator[None]:
    """Coordinate CPU-heavy work across pytest-xdist workers.

    Image builds hold the lock shared, so they still run side by side; the load
    test holds it exclusively, so its figures are not measured while another
    worker compiles an image on the same two cores.
    """
    path = Path(tempfile.gettempdir()) / "fastapi-docker-tests.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def docker_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    info = subprocess.run(["docker", "info"], capture_output=True, check=False)
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return info.returncode == 0 and compose.returncode == 0


def require_docker() -> None:
    """Skip on a laptop without Docker; fail loudly in CI, where it must exist."""
    if docker_usable():
        return
    message = "Docker engine with the compose plugin is not usable"
    if IN_CI:
        pytest.fail(f"{message}; CI must provide it (.ci/run provisions it)", pytrace=False)
    pytest.skip(message)


def require_compose_cli() -> None:
    """`docker compose config` needs only the CLI plugin, not a running engine."""
    ok = (
        shutil.which("docker") is not None
        and subprocess.run(
            ["docker", "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    )
    if ok:
        return
    if IN_CI:
        pytest.fail("the docker compose CLI is missing; CI must provide it", pytrace=False)
    pytest.skip("the docker compose CLI is missing")

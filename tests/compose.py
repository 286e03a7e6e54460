"""A generated project's compose stack under test: own project name, no fixed host port."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import time
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import machine_load, run

# Where a test keeps its stacks, so a failure report can show their logs.
STACKS_KEY = pytest.StashKey[list["ComposeStack"]]()

# The units `docker stats` prints memory in.
MEMORY_UNITS = {
    "B": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
}

# Every published port is picked by Docker, so stacks can run side by side.
RANDOM_PORTS = {"APP_PORT": "0", "POSTGRES_PORT": "0", "REDIS_PORT": "0", "ISSUER_PORT": "0"}
# A stack under test serves far more than RATE_LIMIT_DEFAULT (100 a minute) to one
# address (the host's, through Docker's port mapping): at the service's default its load
# and probes would end in 429s. The rate limits' own stack test sets its limit after this.
RATE_LIMIT_UNDER_TEST = "1000000/second"


class ComposeStack:
    def __init__(self, project: Path, label: str) -> None:
        self.project = project
        self.name = f"fdt-{label}-{uuid.uuid4().hex[:8]}"
        self.env = {**RANDOM_PORTS, "COMPOSE_PROJECT_NAME": self.name}
        env = project / ".env"
        if env.exists() and "\nRATE_LIMIT_DEFAULT=" in env.read_text():
            self.set_env_file("RATE_LIMIT_DEFAULT", RATE_LIMIT_UNDER_TEST)

    def set_env_file(self, name: str, value: str) -> None:
        """A setting for the service's containers: the last line of .env wins."""
        with (self.project / ".env").open("a") as env:
            env.write(f"{name}={value}\n")

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", *args]
        heavy = bool({"build", "--build"} & set(args))
        with machine_load(exclusive=False) if heavy else nullcontext():
            return run(command, self.project, env=self.env, timeout=timeout, check=check)

    def up(self, *services: str, build: bool = False, timeout: int = 300) -> None:
        args = ["up", "--detach", "--wait", "--wait-timeout", str(timeout)]
        if build:
            args.append("--build")
        self.compose(*args, *services, timeout=timeout + 900)

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)

    def port(self, service: str, container_port: int) -> int:
        published = self.compose("port", service, str(container_port)).stdout.strip()
        return int(published.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port('app', 8000)}{path}"

    def container_id(self, service: str, all_states: bool = False) -> str:
        args = ["ps", "--quiet", *(["--all"] if all_states else []), service]
        return self.compose(*args).stdout.strip()

    def inspect(self, service: str) -> dict[str, Any]:
        container = self.container_id(service, all_states=True)
        output = run(["docker", "inspect", container], self.project).stdout
        result: dict[str, Any] = json.loads(output)[0]
        return result

    def memory_bytes(self, service: str) -> int:
        """The memory a running service's container uses now, as `docker stats` reports it."""
        container = self.container_id(service)
        stats = ["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container]
        usage = run(stats, self.project).stdout.split("/")[0].strip()
        found = re.fullmatch(r"([\d.]+)\s*([KMG]i?B|B)", usage)
        assert found is not None, f"unreadable memory usage {usage!r}"
        number, unit = found.groups()
        return int(float(number) * MEMORY_UNITS[unit])

    def dotenv(self) -> dict[str, str]:
        values = {}
        for line in (self.project / ".env").read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                values[key] = value
        return values

    def logs_tail(self, lines: int = 80) -> str:
        result = self.compose("logs", "--no-color", "--tail", str(lines), check=False)
        return result.stdout + result.stderr

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.inspect(service)["State"].get("Health", {}).get("Status") == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy within {timeout}s")

    @functools.cached_property
    def auth(self) -> dict[str, str]:
        """What an /api request carries: for an auth=oidc bake, a token its dev issuer
        gives over HTTP, got as the generated README says; nothing for auth=none."""
        if "AUTH_ISSUER_URL" not in self.dotenv():
            return {}
        token = self.compose("exec", "-T", "issuer", "node", "token.mjs").stdout.strip()
        return {"Authorization": f"Bearer {token}"}

    def headers_for(self, path: str, headers: dict[str, str] | None) -> dict[str, str]:
        return {**(self.auth if path.startswith("/api/") else {}), **(headers or {})}

    def get(
        self, path: str, timeout: float = 5, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return httpx.get(self.url(path), timeout=timeout, headers=self.headers_for(path, headers))

    def post(
        self, path: str, json: Any, timeout: float = 5, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = self.headers_for(path, headers)
        return httpx.post(self.url(path), json=json, timeout=timeout, headers=headers)

    def leftovers(self) -> dict[str, list[str]]:
        """Containers, volumes and networks still labelled with this project."""
        label = f"label=com.docker.compose.project={self.name}"
        found = {}
        for kind, args in {
            "containers": ["ps", "--all", "--quiet", "--filter", label],
            "volumes": ["volume", "ls", "--quiet", "--filter", label],
            "networks": ["network", "ls", "--quiet", "--filter", label],
        }.items():
            found[kind] = run(["docker", *args], self.project).stdout.split()
        return found

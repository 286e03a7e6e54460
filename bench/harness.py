"""Bake the default service, build and start it, and measure it beside its ceiling.

One run, in this order, with the machine held exclusively (the same file lock
the template's tests use for their load test, so no image build of a parallel
test runs on the same cores while anything is timed):

1. bake time (cookiecutter with its hooks, ``uv lock`` included);
2. cold build (no layer cache), code-only rebuild (dependency layer cached),
   image size over its ``python`` base;
3. ``up`` on fresh volumes until ``/health/dependencies`` first answers 200;
4. the ceiling (bench/ceiling.py, same image, same server and workers) is
   started beside the service, on the same db and redis;
5. RSS of each container's processes at idle;
6. wrk, run in each container's own network namespace (loopback for both),
   against every route, interleaved: each round measures the service and the
   ceiling back to back, the order alternating, so drift hits both alike;
7. RSS again after the load.

An ``auth=oidc`` bake (the default; ``--with auth=none`` for one without) also gets a
stand-in issuer: a key made in the service's image, its public half served as a
static JWKS beside the app (compose.bench-auth.yaml), and a token signed with it
that every /api request of the run carries (the ceiling gets the same header and
ignores it). The service fetches the keys once at start, so no request of the load
waits on the network.
Before the load, the service's own Verifier checks that token in a container
without a network: the CPU one verification costs.

The figures are printed as a markdown table and written as JSON to
bench/results/. Nothing here asserts a timing: the goals are reported as met
or not. Any socket error or non-2xx answer fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import TEMPLATE_DIR, bake, context_of, machine_load

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
OVERLAY = BENCH_DIR / "compose.bench.yaml"
AUTH_OVERLAY = BENCH_DIR / "compose.bench-auth.yaml"
WORKER_OVERLAY = BENCH_DIR / "compose.bench-worker.yaml"
# Where the app finds the stand-in issuer's keys, and what its tokens must carry; as
# compose.bench-auth.yaml sets them.
BENCH_ISSUER = "http://bench-issuer:8000"
BENCH_AUDIENCE = "bench"
# Signatures checked for the verification figure, after as many unmeasured ones.
VERIFICATIONS = 2000
WRK_IMAGE = "fdt-bench-wrk:latest"


@dataclass(frozen=True)
class Route:
    label: str
    path: str
    script: str | None = None  # a wrk Lua script baked into the wrk image

    @property
    def needs_token(self) -> bool:
        return self.path.startswith("/api/")


def routes(item_id: int) -> list[Route]:
    return [
        Route("GET /health/live", "/health/live"),
        Route("GET /health/dependencies", "/health/dependencies"),
        Route("GET /api/items/{id}", f"/api/items/{item_id}"),
        Route("GET /api/items?limit=50", "/api/items?limit=50"),
        Route("POST /api/items", "/api/items", script="/bench/post.lua"),
    ]


@dataclass(frozen=True)
class Mode:
    rounds: int
    seconds: int
    warmup_seconds: int
    cold_build: bool
    # A use_worker bake: no-op jobs queued at once per worker and round, and enqueues
    # timed per broker (bench/jobs.py).
    jobs: int
    enqueues: int


MODES = {
    # The figures for the README: three interleaved rounds of 15 s per route and target.
    "full": Mode(rounds=3, seconds=15, warmup_seconds=3, cold_build=True, jobs=3000, enqueues=3000),
    # About three minutes on two cores: one round of 8 s.
    "quick": Mode(rounds=1, seconds=8, warmup_seconds=2, cold_build=True, jobs=2000, enqueues=2000),
    # Proves the harness works (the template's test runs this): every step, 1 s of load.
    "smoke": Mode(rounds=1, seconds=1, warmup_seconds=0, cold_build=False, jobs=200, enqueues=200),
}

# The issue's goals, as ratios to the ceiling measured in the same run.
GOALS = {
    "GET /health/live": 0.8,
    "GET /api/items/{id}": 0.6,
    "POST /api/items": 0.5,
    "GET /api/items?limit=50": 0.5,
}
P99_GOAL = ("GET /api/items/{id}", 2.0)
RSS_GOAL = 1.3
IMAGE_GOAL_MB = 70.0
UP_GOAL_SECONDS = 4.0


# --- running things ------------------------------------------------------------------------


def sh(
    command: Sequence[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 900,
) -> str:
    """Run a command; on failure stop the run with its output."""
    merged = {**os.environ, **(env or {})}
    merged.pop("VIRTUAL_ENV", None)  # a baked project must not borrow ours
    result = subprocess.run(
        list(command), cwd=cwd, env=merged, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
        )
    return result.stdout


def timed(command: Sequence[str], cwd: Path, env: Mapping[str, str]) -> float:
    started = time.monotonic()
    sh(command, cwd, env)
    return time.monotonic() - started


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def container_cpu_ns(container: str) -> int | None:
    """CPU time a container has used, from its cgroup (v1 or v2); None if unreadable.

    CPU per request is the figure that holds when other work shares the machine:
    req/s falls with contention, the work each request costs does not.
    """
    full_id = sh(["docker", "inspect", "--format", "{{.Id}}", container]).strip()
    v1 = [f"/sys/fs/cgroup/{d}/docker/{full_id}/cpuacct.usage" for d in ("cpuacct", "cpu,cpuacct")]
    v2 = [
        f"/sys/fs/cgroup/system.slice/docker-{full_id}.scope/cpu.stat",
        f"/sys/fs/cgroup/docker/{full_id}/cpu.stat",
    ]
    for path in v1:
        try:
            return int(Path(path).read_text())
        except (OSError, ValueError):
            continue
    for path in v2:
        try:
            found = re.search(r"^usage_usec (\d+)", Path(path).read_text(), re.MULTILINE)
        except OSError:
            continue
        if found:
            return int(found.group(1)) * 1000
    return None


class Stack:
    """The baked project's compose stack plus the bench overlay, under its own name."""

    def __init__(
        self, project: Path, workers: int, auth: bool = False, worker: bool = False
    ) -> None:
        self.project = project
        self.auth = auth
        self.worker = worker
        # The bearer token of every /api request, once the issuer's key is made.
        self.token: str | None = None
        run_id = uuid.uuid4().hex[:8]
        self.name = f"fdt-bench-{run_id}"
        self.image = f"fdt-bench-{run_id}:latest"
        self.app_port = free_port()
        self.env = {
            "COMPOSE_PROJECT_NAME": self.name,
            "BENCH_IMAGE": self.image,
            "BENCH_DIR": str(BENCH_DIR),
            "BENCH_WORKERS": str(workers),
            "APP_PORT": str(self.app_port),
            "POSTGRES_PORT": "0",
            "REDIS_PORT": "0",
            # An auth=oidc bake's .env turns the dev issuer on: off here, where the
            # stand-in issuer serves the keys and a Node process beside the load is noise.
            "COMPOSE_PROFILES": "",
        }
        if worker:  # the package whose worker the jobs benchmark runs
            self.env["BENCH_PACKAGE"] = package_name(project)
        self.overlays = [
            OVERLAY,
            *([AUTH_OVERLAY] if auth else []),
            *([WORKER_OVERLAY] if worker else []),
        ]
        for overlay in self.overlays:
            shutil.copy(overlay, project / overlay.name)

    def compose_command(self, *args: str) -> list[str]:
        files = [arg for overlay in self.overlays for arg in ("-f", overlay.name)]
        return ["docker", "compose", "-f", "compose.yaml", *files, *args]

    def headers(self, route: Route) -> dict[str, str]:
        """What a request of the route carries besides wrk's own: the token on /api."""
        if self.token is not None and route.needs_token:
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def compose(self, *args: str, timeout: float = 900) -> str:
        return sh(self.compose_command(*args), self.project, self.env, timeout)

    def timed(self, *args: str) -> float:
        return timed(self.compose_command(*args), self.project, self.env)

    def container(self, service: str) -> str:
        return self.compose("ps", "--quiet", service).strip()

    def down(self) -> None:
        subprocess.run(
            self.compose_command("down", "--volumes", "--remove-orphans", "--timeout", "10"),
            cwd=self.project,
            env={**os.environ, **self.env},
            capture_output=True,
            check=False,
        )
        subprocess.run(["docker", "image", "rm", self.image], capture_output=True, check=False)


# --- measurements ------------------------------------------------------------------------


def image_bytes(image: str) -> int:
    return int(sh(["docker", "image", "inspect", "--format", "{{.Size}}", image]).strip())


def package_name(project: Path) -> str:
    return next(p.name for p in (project / "src").iterdir() if p.is_dir())


def base_image(project: Path) -> str:
    froms = re.findall(r"^FROM\s+(\S+)", (project / "Dockerfile").read_text(), re.MULTILINE)
    return str(froms[-1])  # the runtime stage's base


def up_until_ready(stack: Stack, deadline_seconds: float = 180) -> dict[str, Any]:
    """`up` on fresh volumes; seconds until /health/dependencies first answers 200."""
    stack.down()  # nothing of an earlier attempt: fresh volumes
    url = f"http://127.0.0.1:{stack.app_port}/health/dependencies"
    started, started_at = time.monotonic(), datetime.now(UTC)
    up = subprocess.Popen(
        stack.compose_command("up", "--detach", "app"),
        cwd=stack.project,
        env={**os.environ, **stack.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first_200: float | None = None
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() - started < deadline_seconds:
            try:
                if client.get(url).status_code == 200:
                    first_200 = time.monotonic() - started
                    break
            except httpx.HTTPError:
                pass
            if up.poll() not in (None, 0):
                break
            time.sleep(0.05)
    output, _ = up.communicate(timeout=deadline_seconds)
    if first_200 is None:
        raise RuntimeError(f"/health/dependencies never answered 200; `up` said:\n{output[-4000:]}")
    return {"first_200_seconds": first_200, "timeline": timeline(stack, started_at)}


def _seconds_since(stamp: str, origin: datetime) -> float | None:
    if not stamp or stamp.startswith("0001-"):
        return None
    # Docker prints nanoseconds; datetime takes microseconds.
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", stamp).replace("Z", "+00:00")
    return round((datetime.fromisoformat(trimmed) - origin).total_seconds(), 2)


def timeline(stack: Stack, origin: datetime) -> dict[str, dict[str, float | None]]:
    """When each container started, became healthy and (migrate) exited, from `up`'s start.

    Shows where the seconds to the first 200 go: database initialisation, the
    health-check interval, the migration job, the server's start.
    """
    events: dict[str, dict[str, float | None]] = {}
    for service in ("db", "redis", "migrate", "app"):
        container = stack.compose("ps", "--all", "--quiet", service).strip()
        if not container:
            continue
        state = json.loads(sh(["docker", "inspect", "--format", "{{json .State}}", container]))
        healthy = [
            entry["End"]
            for entry in (state.get("Health") or {}).get("Log", [])
            if entry.get("ExitCode") == 0
        ]
        events[service] = {
            "started": _seconds_since(state.get("StartedAt", ""), origin),
            "first_healthy_check": _seconds_since(min(healthy), origin) if healthy else None,
            "exited": None if state.get("Running") else _seconds_since(state["FinishedAt"], origin),
        }
    return events


def memory(container: str) -> dict[str, Any]:
    """RSS (and PSS where /proc is readable) of a container's server processes.

    Health-check probes that happen to run, or have just exited (a zombie until
    reaped), are left out: they are not the server.
    """
    table = sh(["docker", "top", container, "-o", "pid,rss,args"]).splitlines()[1:]
    processes: list[dict[str, Any]] = []
    rss_total, pss_total, pss_known = 0, 0, True
    for line in table:
        pid, rss_kib, args = line.split(None, 2)
        if "healthcheck" in args or args.endswith("<defunct>"):
            continue
        pss_kib: int | None = None
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            found = re.search(r"^Pss:\s+(\d+) kB", rollup, re.MULTILINE)
            pss_kib = int(found.group(1)) if found else None
        except OSError:
            pass  # not root, or the engine runs on another host (Docker Desktop)
        rss_total += int(rss_kib)
        pss_total += pss_kib or 0
        pss_known = pss_known and pss_kib is not None
        processes.append(
            {"pid": int(pid), "rss_kib": int(rss_kib), "pss_kib": pss_kib, "args": args}
        )
    return {
        "processes": processes,
        "rss_mib": rss_total / 1024,
        # Proportional set size: shared pages split between the processes sharing them.
        "pss_mib": pss_total / 1024 if pss_known else None,
    }


_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_REQUESTS = re.compile(r"(\d+) requests in")
_TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _percentile(output: str, percent: int) -> float:
    found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {percent}% latency in wrk output:\n{output}")
    return float(found.group(1)) * _TO_MS[found.group(2)]


def wrk(
    container: str,
    route: Route,
    seconds: int,
    args: argparse.Namespace,
    db: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """wrk inside the container's network namespace, against its own loopback.

    With ``db``, also the CPU the server's and the database's containers spent
    per request while it ran.
    """
    cpu_before = {"server": container_cpu_ns(container), "db": db and container_cpu_ns(db)}
    header_args = [arg for item in (headers or {}).items() for arg in ("--header", ": ".join(item))]
    command = [
        "docker", "run", "--rm", "--network", f"container:{container}", WRK_IMAGE,
        "--threads", str(args.threads), "--connections", str(args.connections),
        "--duration", f"{seconds}s", "--timeout", "5s", "--latency",
        *header_args,
        *(["--script", route.script] if route.script else []),
        f"http://127.0.0.1:8000{route.path}",
    ]  # fmt: skip
    output = sh(command, timeout=seconds + 120)
    cpu_after = {"server": container_cpu_ns(container), "db": db and container_cpu_ns(db)}
    rps = _WRK_RPS.search(output)
    requests = _WRK_REQUESTS.search(output)
    if rps is None or requests is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    socket_errors = _WRK_ERRORS.search(output)
    non_2xx = _WRK_NON_2XX.search(output)
    count = int(requests.group(1))
    cpu_us: dict[str, float | None] = {}
    for part in ("server", "db"):
        before, after = cpu_before[part], cpu_after[part]
        usable = before is not None and after is not None and count > 0
        cpu_us[part] = (after - before) / 1000 / count if usable else None  # type: ignore[operator]
    return {
        "rps": float(rps.group(1)),
        "requests": count,
        "cpu_us_per_request": cpu_us["server"],
        "db_cpu_us_per_request": cpu_us["db"],
        "p50_ms": _percentile(output, 50),
        "p99_ms": _percentile(output, 99),
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
    }


def median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": statistics.median(s["rps"] for s in samples),
        "cpu_us_per_request": median_or_none([s["cpu_us_per_request"] for s in samples]),
        "db_cpu_us_per_request": median_or_none([s["db_cpu_us_per_request"] for s in samples]),
        "p50_ms": statistics.median(s["p50_ms"] for s in samples),
        "p99_ms": statistics.median(s["p99_ms"] for s in samples),
        "errors": sum(s["socket_errors"] + s["non_2xx"] for s in samples),
        "rounds": samples,
    }


# --- the machine and the versions --------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "docker": sh(["docker", "version", "--format", "{{.Server.Version}}"]).strip(),
        "compose": sh(["docker", "compose", "version", "--short"]).strip(),
    }


IMAGE_VERSIONS = """
import importlib.metadata as m, json, sys
names = ["fastapi", "starlette", "pydantic", "uvicorn", "uvicorn-worker", "gunicorn",
         "sqlalchemy", "asyncpg", "redis", "uvloop", "httptools", "taskiq", "taskiq-redis"]
found = {}
for name in names:
    try:
        found[name] = m.version(name)
    except m.PackageNotFoundError:
        pass
print(json.dumps({"python": sys.version.split()[0], **found}))
"""


def versions(image: str) -> dict[str, Any]:
    inside = json.loads(sh(["docker", "run", "--rm", image, "python", "-c", IMAGE_VERSIONS]))
    # wrk prints its version with the usage text and exits 1.
    wrk_version = subprocess.run(
        ["docker", "run", "--rm", WRK_IMAGE, "--version"], capture_output=True, text=True
    ).stdout.split("[")[0]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=TEMPLATE_DIR, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain"], cwd=TEMPLATE_DIR, capture_output=True, text=True
    ).stdout.strip()
    return {
        "template_commit": commit + ("-dirty" if dirty else ""),
        "image": inside,
        "wrk": wrk_version.strip(),
    }


# --- auth=oidc: the stand-in issuer and the verification figure ----------------------------

# Run in the service's image (its joserfc, its auth.py), with no network: makes the
# issuer's key and a token for the run, then times the service's own Verifier on that
# token, its key already cached as after the start-up fetch. Prints JSON.
ISSUER_SCRIPT = """
import asyncio, importlib, json, os, sys, time
import httpx
from joserfc import jwt
from joserfc.jwk import RSAKey

package = os.environ["BENCH_PACKAGE"]
auth = importlib.import_module(package + ".auth")
settings = importlib.import_module(package + ".settings").Settings()
key = RSAKey.generate_key(2048, {"kid": "bench-1", "alg": "RS256", "use": "sig"})
now = int(time.time())
claims = {
    "iss": settings.auth_issuer_url, "aud": settings.auth_audience, "sub": "bench",
    "client_id": "bench", "iat": now, "exp": now + 86400, "scope": "items:read items:write",
}
token = jwt.encode({"alg": "RS256", "kid": "bench-1"}, claims, key)
jwks = {"keys": [key.as_dict(private=False)]}
count = int(sys.argv[1])


async def cpu_per_verification():
    async with httpx.AsyncClient() as http:
        keys = auth.IssuerKeys(settings, http)
        keys.keys, keys.fetched_at = auth.signing_keys(jwks), keys.clock()
        verifier = auth.Verifier(settings, keys)
        for _ in range(count):  # warm-up
            await verifier.verify(token)
        started = time.process_time()
        for _ in range(count):
            await verifier.verify(token)
        return (time.process_time() - started) / count * 1e6


verify_cpu_us = asyncio.run(cpu_per_verification())
print(json.dumps({"token": token, "jwks": jwks, "verify_cpu_us": verify_cpu_us}))
"""


def stand_in_issuer(stack: Stack, project: Path) -> dict[str, Any]:
    """Make the issuer's key and the run's token, time one verification; serve the keys."""
    package = package_name(project)
    output = sh([
        "docker", "run", "--rm", "--network", "none", "--env-file", str(project / ".env"),
        "--env", f"AUTH_ISSUER_URL={BENCH_ISSUER}", "--env", f"AUTH_AUDIENCE={BENCH_AUDIENCE}",
        "--env", f"BENCH_PACKAGE={package}",
        stack.image, "python", "-c", ISSUER_SCRIPT, str(VERIFICATIONS),
    ])  # fmt: skip
    made = json.loads(output)
    keys = project / "bench-issuer"
    keys.mkdir(exist_ok=True)
    (keys / "jwks.json").write_text(json.dumps(made["jwks"]))
    stack.token = made["token"]
    return {
        "algorithm": "RS256 (2048-bit key)",
        "verifications": VERIFICATIONS,
        "verify_cpu_us": made["verify_cpu_us"],
    }


def created_item(stack: Stack, deadline_seconds: float = 30) -> int:
    """An item to read, made through the API; retried while the service still answers 503
    (its workers fetch the issuer's keys as they start)."""
    started = time.monotonic()
    headers = stack.headers(Route("POST /api/items", "/api/items"))
    while True:
        created = httpx.post(
            f"http://127.0.0.1:{stack.app_port}/api/items",
            json={"name": "bench"},
            headers=headers,
            timeout=10,
        )
        if created.status_code != 503 or time.monotonic() - started > deadline_seconds:
            created.raise_for_status()
            return int(created.json()["id"])
        time.sleep(0.2)


# --- use_worker: jobs through the service's worker against a bare taskiq worker -----------


def jobs_benchmark(stack: Stack, mode: Mode) -> dict[str, Any]:
    """bench/jobs.py's drive, with both workers running, then stopped before the HTTP load.

    Also the CPU each worker's container spent per job, from its cgroup: every job either
    ran in the drive is a no-op, so the figure is the worker's own cost per job.
    """
    workers = {"service": "worker", "bare": "bare-worker"}
    stack.compose("up", "--detach", "--no-deps", *workers.values())
    containers = {name: stack.container(service) for name, service in workers.items()}
    cpu_before = {name: container_cpu_ns(container) for name, container in containers.items()}
    output = stack.compose(
        "run", "--rm", "--no-deps", "jobs-driver",
        "python", "/bench/bench_jobs.py", "drive",
        str(mode.jobs), str(mode.rounds), str(mode.enqueues),
    )  # fmt: skip
    cpu_after = {name: container_cpu_ns(container) for name, container in containers.items()}
    stack.compose("stop", *workers.values())
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    result["cpu_us_per_job"] = {}
    for name in workers:
        before, after = cpu_before[name], cpu_after[name]
        known = before is not None and after is not None
        result["cpu_us_per_job"][name] = (
            (after - before) / 1000 / result["jobs_run"] if known else None  # type: ignore[operator]
        )
    service, bare = result["jobs_per_second"]["service"], result["jobs_per_second"]["bare"]
    result["jobs_ratio"] = service / bare
    return result


def jobs_table(result: dict[str, Any]) -> list[str]:
    """use_worker: the worker against bare taskiq, and what enqueueing costs a route."""
    jobs = result["jobs"]
    rate, cpu, enqueue = jobs["jobs_per_second"], jobs["cpu_us_per_job"], jobs["enqueue"]
    post = result["routes"]["POST /api/items"]

    def us(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f} µs"

    known = cpu["service"] is not None and cpu["bare"]
    cpu_ratio = f"{cpu['service'] / cpu['bare']:.2f}" if known else "n/a"
    times = "\N{MULTIPLICATION SIGN}"
    return [
        f"Background jobs: {jobs['jobs']:,} no-op jobs queued at once, {jobs['rounds']} "
        f"round(s) per worker, alternating; one worker process each, on the same Redis.",
        "",
        "| jobs | service worker | bare taskiq worker | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| jobs/s through one worker process (median) | {rate['service']:,.0f} "
        f"| {rate['bare']:,.0f} | {jobs['jobs_ratio']:.2f} |",
        f"| worker CPU per job (cgroup) | {us(cpu['service'])} | {us(cpu['bare'])} | {cpu_ratio} |",
        f"| enqueue (`kiq`, one at a time, {jobs['enqueues']:,}), p50 / p99 "
        f"| {enqueue['service']['p50_us']:,.0f} / {enqueue['service']['p99_us']:,.0f} µs "
        f"| {enqueue['bare']['p50_us']:,.0f} / {enqueue['bare']['p99_us']:,.0f} µs "
        f"| {enqueue['service']['p50_us'] / enqueue['bare']['p50_us']:.2f} {times} p50 |",
        f"| `POST /api/items`, its job enqueued, p50 / p99 (the ceiling's: no enqueue) "
        f"| {post['service']['p50_ms']:.1f} / {post['service']['p99_ms']:.1f} ms "
        f"| {post['ceiling']['p50_ms']:.1f} / {post['ceiling']['p99_ms']:.1f} ms "
        f"| {post['p99_ratio']:.2f} {times} p99 |",
    ]


# --- the run -----------------------------------------------------------------------------


@contextmanager
def exclusive_machine(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    with machine_load(exclusive=True):
        yield


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, mode: Mode, extra: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": args.mode,
        "parameters": {
            "workers": args.workers,
            "wrk": {"threads": args.threads, "connections": args.connections},
            "rounds": mode.rounds,
            "seconds": mode.seconds,
            "warmup_seconds": mode.warmup_seconds,
        },
        "options": context_of(**extra),
        "machine": machine(),
    }
    with tempfile.TemporaryDirectory(prefix="fdt-bench-") as tmp:
        started = time.monotonic()
        project = bake(Path(tmp), **extra)
        result["bake_seconds"] = time.monotonic() - started
        stack = Stack(
            project,
            args.workers,
            auth=result["options"]["auth"] == "oidc",
            worker=result["options"]["use_worker"],
        )
        log(f"baked {project.name} in {result['bake_seconds']:.1f} s; stack {stack.name}")
        try:
            with exclusive_machine(not args.no_lock):
                result.update(measure_stack(stack, project, mode, args))
        finally:
            if args.keep:
                log(f"left running: cd {project} && " + " ".join(
                    [f"{k}={v}" for k, v in stack.env.items()] + stack.compose_command("ps")
                ))  # fmt: skip
                input("press enter to take the stack down ")
            stack.down()
    return result


def measure_stack(
    stack: Stack, project: Path, mode: Mode, args: argparse.Namespace
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    stack.compose("--profile", "tools", "build", "wrk")

    build: dict[str, Any] = {}
    if mode.cold_build:
        log("cold build (no layer cache)")
        build["cold_seconds"] = stack.timed("build", "--no-cache", "app")
    else:
        build["cold_seconds"] = None
        stack.compose("build", "app")
    package = next(p for p in (project / "src").iterdir() if p.is_dir())
    with (package / "__init__.py").open("a") as init:
        # Unique, so no earlier run's layer can be reused.
        init.write(f"# a code-only change for the rebuild figure: {uuid.uuid4().hex}\n")
    log("code-only rebuild")
    build["code_rebuild_seconds"] = stack.timed("build", "app")
    base = base_image(project)
    build["image_mb"] = image_bytes(stack.image) / 1e6
    build["base_image"] = base
    build["base_mb"] = image_bytes(base) / 1e6
    build["over_base_mb"] = build["image_mb"] - build["base_mb"]
    result["build"] = build
    if stack.auth:
        log("the stand-in issuer's key, the token, one verification's CPU")
        result["auth"] = stand_in_issuer(stack, project)

    log("up on fresh volumes")
    result["up"] = up_until_ready(stack)
    stack.compose("up", "--detach", "--wait", "--wait-timeout", "120", "ceiling")
    result["versions"] = versions(stack.image)
    if stack.worker:
        log(f"jobs: {mode.jobs} no-op jobs per worker and round, then the enqueue")
        result["jobs"] = jobs_benchmark(stack, mode)

    item_id = created_item(stack)
    targets = {"service": stack.container("app"), "ceiling": stack.container("ceiling")}
    todo = routes(item_id)
    db = stack.container("db")

    idle = {name: memory(container) for name, container in targets.items()}

    if mode.warmup_seconds:
        log("warm-up")
        for route in todo:
            for container in targets.values():
                wrk(container, route, mode.warmup_seconds, args, headers=stack.headers(route))

    samples: dict[str, dict[str, list[dict[str, Any]]]] = {
        r.label: {"service": [], "ceiling": []} for r in todo
    }
    for round_index in range(mode.rounds):
        for route_index, route in enumerate(todo):
            order = ["service", "ceiling"]
            if (round_index + route_index) % 2:
                order.reverse()
            for name in order:
                log(f"round {round_index + 1}/{mode.rounds} {route.label} {name}")
                samples[route.label][name].append(
                    wrk(
                        targets[name],
                        route,
                        mode.seconds,
                        args,
                        db=db,
                        headers=stack.headers(route),
                    )
                )

    after = {name: memory(container) for name, container in targets.items()}
    failed = any(
        s["socket_errors"] or s["non_2xx"]
        for by_target in samples.values()
        for runs in by_target.values()
        for s in runs
    )
    if failed:  # what the servers said, before the stack is gone
        result["logs_on_error"] = stack.compose(
            "logs", "--no-color", "--tail", "60", "app", "ceiling"
        )
        log("errors under load; the servers' last log lines:\n" + result["logs_on_error"][-6000:])
    result["memory"] = {name: {"idle": idle[name], "after_load": after[name]} for name in targets}
    result["routes"] = {}
    for label, by_target in samples.items():
        service, ceiling = summary(by_target["service"]), summary(by_target["ceiling"])
        result["routes"][label] = {
            "service": service,
            "ceiling": ceiling,
            "rps_ratio": service["rps"] / ceiling["rps"],
            "p99_ratio": service["p99_ms"] / ceiling["p99_ms"],
        }
    return result


def goals(result: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for each of the issue's goals."""
    times = "\N{MULTIPLICATION SIGN}"
    checks = []
    for label, goal in GOALS.items():
        ratio = result["routes"][label]["rps_ratio"]
        checks.append((f"`{label}` req/s ≥ {goal} {times} ceiling", f"{ratio:.2f}", ratio >= goal))
    label, factor = P99_GOAL
    p99 = result["routes"][label]["p99_ratio"]
    checks.append((f"`{label}` p99 ≤ {factor:g} {times} ceiling's", f"{p99:.2f}", p99 <= factor))
    memory = result["memory"]
    rss = memory["service"]["after_load"]["rss_mib"] / memory["ceiling"]["after_load"]["rss_mib"]
    checks.append((f"RSS after load ≤ {RSS_GOAL} {times} ceiling's", f"{rss:.2f}", rss <= RSS_GOAL))
    over = result["build"]["over_base_mb"]
    checks.append(
        (f"image over base ≤ {IMAGE_GOAL_MB:g} MB", f"{over:.0f} MB", over <= IMAGE_GOAL_MB)
    )
    up = result["up"]["first_200_seconds"]
    checks.append(
        (f"`up` on fresh volumes → first 200 ≤ {UP_GOAL_SECONDS:g} s", f"{up:.1f} s",
         up <= UP_GOAL_SECONDS)
    )  # fmt: skip
    return checks


def authenticated_read(result: dict[str, Any]) -> list[str]:
    """auth=oidc: what checking the token costs the item read, beside the ceiling's read."""
    auth = result["auth"]
    verify = auth["verify_cpu_us"]
    row = result["routes"]["GET /api/items/{id}"]
    service, ceiling = row["service"]["cpu_us_per_request"], row["ceiling"]["cpu_us_per_request"]
    lines = [
        "| authenticated item read (`GET /api/items/{id}` with a bearer token) | measured |",
        "| --- | ---: |",
        f"| token verification, CPU per request (the service's Verifier in-process, "
        f"{auth['algorithm']}, key cached, {auth['verifications']:,} tokens) | {verify:,.0f} µs |",
        f"| req/s ratio to the ceiling (no token check) | {row['rps_ratio']:.2f} |",
    ]
    if service is not None and ceiling:
        lines += [
            f"| CPU per request: service, ceiling (ratio) "
            f"| {service:,.0f} µs, {ceiling:,.0f} µs ({service / ceiling:.2f}) |",
            f"| verification's share of the service's CPU per request | {verify / service:.0%} |",
        ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    options = result["options"]
    shown = [
        "python_version",
        "use_postgres",
        "use_redis",
        "use_rate_limit",
        "include_example_api",
        "server",
        "auth",
        "use_worker",
    ]
    shown += sorted(set(options) - set(context_of()))  # options added after this harness
    chosen = ", ".join(f"{key}={options[key]}" for key in shown)
    machine, versions, params = result["machine"], result["versions"], result["parameters"]
    image = versions["image"]
    packages = ", ".join(f"{name} {version}" for name, version in image.items() if name != "python")
    lines = [
        f"Measured {result['when']}, {result['mode']} mode ({params['rounds']} round(s) of "
        f"{params['seconds']} s per route and target; medians), "
        f"template {versions['template_commit']}.",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Docker {machine['docker']}, Compose {machine['compose']}; "
        f"{versions['wrk']}, {params['wrk']['connections']} connections, "
        f"{params['wrk']['threads']} threads, inside each container's network namespace.",
        f"Image: Python {image['python']}, {packages}.",
        f"Bake: {chosen}; {params['workers']} gunicorn workers; LOG_LEVEL=INFO "
        "(JSON access log on).",
        "",
        "| route | service req/s | p50 ms | p99 ms | ceiling req/s | p50 ms | p99 ms "
        "| req/s ratio | p99 ratio | errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, row in result["routes"].items():
        s, c = row["service"], row["ceiling"]
        lines.append(
            f"| `{label}` | {s['rps']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {c['rps']:,.0f} | {c['p50_ms']:.1f} | {c['p99_ms']:.1f} "
            f"| {row['rps_ratio']:.2f} | {row['p99_ratio']:.2f} | {s['errors'] + c['errors']} |"
        )
    lines += [
        "",
        "CPU per request (from the containers' cgroups, so it holds under contention), µs:",
        "",
        "| route | service | its db | ceiling | its db | ratio (server) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]

    def us(value: float | None) -> str:
        return "n/a" if value is None else f"{value:,.0f}"

    for label, row in result["routes"].items():
        s, c = row["service"], row["ceiling"]
        known = s["cpu_us_per_request"] is not None and c["cpu_us_per_request"]
        ratio = f"{s['cpu_us_per_request'] / c['cpu_us_per_request']:.2f}" if known else "n/a"
        lines.append(
            f"| `{label}` | {us(s['cpu_us_per_request'])} | {us(s['db_cpu_us_per_request'])} "
            f"| {us(c['cpu_us_per_request'])} | {us(c['db_cpu_us_per_request'])} | {ratio} |"
        )
    if "auth" in result:
        lines += ["", *authenticated_read(result)]
    if "jobs" in result:
        lines += ["", *jobs_table(result)]
    mem, build, up = result["memory"], result["build"], result["up"]

    def mib(entry: dict[str, Any]) -> str:
        pss = f" (PSS {entry['pss_mib']:.0f})" if entry["pss_mib"] is not None else ""
        return f"{entry['rss_mib']:.0f} MiB{pss}, {len(entry['processes'])} processes"

    def both(moment: str) -> str:
        return f"{mib(mem['service'][moment])} | {mib(mem['ceiling'][moment])}"

    cold = "not measured" if build["cold_seconds"] is None else f"{build['cold_seconds']:.1f} s"
    image_size = f"{build['over_base_mb']:.0f} MB ({build['image_mb']:.0f} MB in all)"
    lines += [
        "",
        "| figure | service | ceiling |",
        "| --- | --- | --- |",
        f"| RSS at idle | {both('idle')} |",
        f"| RSS after load | {both('after_load')} |",
        f"| bake | {result['bake_seconds']:.1f} s | |",
        f"| cold build (no layer cache) | {cold} | |",
        f"| code-only rebuild | {build['code_rebuild_seconds']:.1f} s | |",
        f"| image size over `{build['base_image']}` | {image_size} | |",
        f"| `up` on fresh volumes → first 200 from `/health/dependencies` "
        f"| {up['first_200_seconds']:.1f} s | |",
        "",
        "| goal | measured | met |",
        "| --- | ---: | --- |",
    ]
    for goal, measured, met in goals(result):
        lines.append(f"| {goal} | {measured} | {'yes' if met else '**no**'} |")
    steps = []
    for service, events in up.get("timeline", {}).items():
        parts = [f"{name.replace('_', ' ')} {value:.1f}" for name, value in events.items() if value]
        steps.append(f"{service}: " + ", ".join(parts))
    if steps:
        lines += ["", "`up` timeline, seconds from the command: " + "; ".join(steps) + "."]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="one 8 s round per route (about 3 minutes)",
    )
    speed.add_argument(
        "--smoke",
        dest="mode",
        action="store_const",
        const="smoke",
        help="1 s of load per route, no cold build: proves the harness works",
    )
    parser.set_defaults(mode="full")
    parser.add_argument("--workers", type=int, default=2, help="server workers for both (2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument(
        "--with",
        dest="answers",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a cookiecutter answer other than the default (repeatable)",
    )
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON goes (bench/results)"
    )
    parser.add_argument(
        "--no-lock",
        action="store_true",
        help="do not take the machine-wide lock the template's tests share",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the stack up until enter is pressed (for profiling)",
    )
    return parser.parse_args(argv)  # fmt: skip


def answer(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--with {text!r}: expected KEY=VALUE")
    typed: Any = {"true": True, "false": False}.get(value.lower(), value)
    return key, typed


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    extra = dict(answer(text) for text in args.answers)
    result = measure(args, MODES[args.mode], extra)
    table = markdown(result)
    result["goals"] = [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals(result)]
    errors = sum(r["service"]["errors"] + r["ceiling"]["errors"] for r in result["routes"].values())
    result["errors"] = errors
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = args.results_dir / f"{stamp}-{args.mode}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(table)
    print(f"\nJSON: {path}")
    if errors:
        print(f"FAILED: {errors} socket errors or non-2xx answers under load", file=sys.stderr)
        return 1
    return 0

"""Build the generated images and run the generated compose stacks for real.

Each variant is baked under its own name (so images never collide), started with
`docker compose up --build --wait` exactly as the service README says, checked,
rebuilt after a code-only change, and taken down with nothing left behind.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.compose import ComposeStack
from tests.helpers import VARIANTS, bake, context_of, run

pytestmark = pytest.mark.docker

E2E_VARIANTS = ["default", "no-redis", "no-postgres", "uvicorn"]

# Printed by a throwaway container of the runtime image: what must NOT be there.
IMAGE_PROBE = """
import importlib.util, json, os, shutil
print(json.dumps({
    "modules": [m for m in ("pytest", "ruff", "mypy", "pip") if importlib.util.find_spec(m)],
    "binaries": [b for b in ("uv", "uvx", "gcc", "cc", "curl", "wget") if shutil.which(b)],
    "paths": [p for p in ("/app/.env", "/app/tests", "/app/.git", "/app/src") if os.path.exists(p)],
    "uid": os.getuid(),
}))
"""


def docker_time(value: str) -> datetime:
    """Docker's RFC 3339 timestamps carry nanoseconds; keep microseconds."""
    trimmed = re.sub(r"(\.\d{6})\d*", r"\1", value).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed)


def check_stack_started_in_order(stack: ComposeStack, context: dict[str, Any]) -> None:
    long_running = ["app"] + (["db"] if context["use_postgres"] else [])
    long_running += ["redis"] if context["use_redis"] else []
    long_running += ["issuer"] if context["auth"] == "oidc" else []
    for service in long_running:
        health = stack.inspect(service)["State"]["Health"]["Status"]
        assert health == "healthy", f"{service} is {health}"
    if context["use_postgres"]:
        migrate = stack.inspect("migrate")["State"]
        app = stack.inspect("app")["State"]
        assert migrate["Status"] == "exited"
        assert migrate["ExitCode"] == 0
        assert docker_time(migrate["FinishedAt"]) <= docker_time(app["StartedAt"]), (
            "the app started before the migrate job had finished"
        )
    if context["auth"] == "oidc":
        # The app fetches the issuer's keys at start: it waits for the dev issuer to
        # serve them, so no worker started without them.
        logs = stack.compose("logs", "--no-color", "app").stdout
        assert "could not fetch the issuer's keys" not in logs, logs[-3000:]


def check_manual_migration_commands(stack: ComposeStack, context: dict[str, Any]) -> None:
    """The README's by-hand migration commands work against the running stack."""

    def alembic(*args: str) -> str:
        result = stack.compose("run", "--rm", "--no-deps", "migrate", "alembic", *args)
        return result.stdout + result.stderr

    head = "0003" if context["use_worker"] else "0002"  # the worker's processed_at
    assert f"{head} (head)" in alembic("current")
    alembic("downgrade", "-1")
    assert head not in alembic("current")
    alembic("upgrade", "+1")
    assert f"{head} (head)" in alembic("current")


def check_worker_processes_a_job(stack: ComposeStack) -> None:
    """The worker service runs the job POST /api/items enqueues, and logs it as JSON
    with the job and the id of the request that enqueued it."""
    marker = f"e2e-job-{uuid.uuid4().hex[:8]}"
    created = stack.post("/api/items", json={"name": "queued"}, headers={"X-Request-ID": marker})
    assert created.status_code == 201, created.text
    deadline = time.monotonic() + 60
    while stack.get(f"/api/items/{created.json()['id']}").json()["processed_at"] is None:
        assert time.monotonic() < deadline, f"job not done:\n{stack.logs_tail()}"
        time.sleep(0.5)
    worker = stack.inspect("worker")
    assert worker["HostConfig"]["ReadonlyRootfs"] is True
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", worker["Config"]["User"])
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "worker").stdout
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    # The other items this test created had jobs too, under other request ids.
    done = [line for line in lines if line.get("request_id") == marker]
    assert [(line["message"], line["job_name"]) for line in done][-1] == (
        "job succeeded",
        "process_item",
    ), logs[-3000:]


def check_app_logs_are_json_lines(stack: ComposeStack) -> None:
    """Every line the app container writes (server and app alike) is one JSON object."""
    # Probes are not access-logged by default: ask for something that is.
    marker = f"e2e-{uuid.uuid4().hex[:8]}"
    stack.get("/not-a-probe", headers={"X-Request-ID": marker})
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "app").stdout
    lines = [line for line in logs.splitlines() if line.strip()]
    assert lines, "the app logged nothing"
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    access = [json.loads(line) for line in lines if json.loads(line).get("request_id") == marker]
    assert [line["status"] for line in access] == [404], "no access log line"


def check_health_endpoints(stack: ComposeStack, context: dict[str, Any]) -> None:
    for probe in ("/health/live", "/health/ready"):
        answer = stack.get(probe)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"}), probe
    dependencies = stack.get("/health/dependencies")
    assert dependencies.status_code == 200, dependencies.text
    expected = {"database"} if context["use_postgres"] else set()
    expected |= {"redis"} if context["use_redis"] else set()
    expected |= {"issuer"} if context["auth"] == "oidc" else set()
    checks = dependencies.json()["checks"]
    assert set(checks) == expected
    assert all(check["status"] == "ok" for check in checks.values())


def check_item_survives_app_restart(stack: ComposeStack) -> None:
    created = stack.post("/api/items", json={"name": "persisted"})
    assert created.status_code == 201, created.text
    item_id = created.json()["id"]
    stack.compose("restart", "app")
    stack.wait_healthy("app")
    fetched = stack.get(f"/api/items/{item_id}")
    assert fetched.status_code == 200
    assert fetched.json()["name"] == "persisted"


def check_non_root_and_image_healthcheck(stack: ComposeStack) -> None:
    app = stack.inspect("app")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", app["Config"]["User"]), app["Config"]["User"]
    status = stack.compose("exec", "-T", "app", "cat", "/proc/1/status").stdout
    uids = re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)
    assert uids is not None and int(uids.group(1)) > 0, "PID 1 runs as root"
    healthcheck = " ".join(app["Config"]["Healthcheck"]["Test"])
    assert ".healthcheck" in healthcheck, "the Dockerfile HEALTHCHECK is not the one in use"
    assert app["State"]["Health"]["Status"] == "healthy"


IMAGE_OVER_BASE_BUDGET_MB = 85


def check_runtime_image_is_lean(stack: ComposeStack, context: dict[str, Any]) -> str:
    image = stack.inspect("app")["Config"]["Image"]
    probe = run(
        ["docker", "run", "--rm", "--entrypoint", "python", image, "-c", IMAGE_PROBE],
        stack.project,
    )
    found = json.loads(probe.stdout)
    assert found["modules"] == [], f"dev tools in the runtime image: {found['modules']}"
    assert found["binaries"] == [], f"build tools in the runtime image: {found['binaries']}"
    assert found["paths"] == [], f"files that must not ship: {found['paths']}"
    assert found["uid"] != 0

    def size(ref: str) -> int:
        return int(
            run(["docker", "image", "inspect", "-f", "{{.Size}}", ref], stack.project).stdout
        )

    base = f"python:{context['python_version']}-slim-trixie"
    total, base_size = size(image), size(base)
    over = (total - base_size) / 1e6
    # What the service adds to its base (its virtual environment, stripped of debug
    # sections): 40 to 58 MB for the option mixes tested with auth=none, 78 with the
    # default auth=oidc, whose cryptography (RSA and EC signatures) is 20 of them.
    assert over <= IMAGE_OVER_BASE_BUDGET_MB, f"{over:.1f} MB over {base}"
    return f"image {total / 1e6:.1f} MB, {over:.1f} MB over {base}"


def check_code_change_reuses_dependency_layer(stack: ComposeStack) -> str:
    main = next((stack.project / "src").glob("*/main.py"))
    # Unique, so BuildKit cannot serve the project layer from an earlier run either.
    main.write_text(main.read_text() + f"\n# a code-only change {uuid.uuid4().hex}\n")
    started = time.monotonic()
    build = stack.compose("--progress", "plain", "build", "app")
    elapsed = time.monotonic() - started
    log = build.stdout + build.stderr
    step = re.search(r"^(#\d+) \[[^\]]*\] RUN .*--no-install-project", log, re.MULTILINE)
    assert step is not None, f"dependency step not found in the build log:\n{log[-3000:]}"
    assert re.search(rf"^{step.group(1)} CACHED$", log, re.MULTILINE), (
        f"the dependency layer was rebuilt after a code-only change:\n{log[-3000:]}"
    )
    source = re.search(r"^(#\d+) \[[^\]]*\] COPY src ", log, re.MULTILINE)
    assert source is not None, f"source step not found in the build log:\n{log[-3000:]}"
    assert not re.search(rf"^{source.group(1)} CACHED$", log, re.MULTILINE), (
        "the changed source was not copied again"
    )
    return f"rebuild after a code-only change {elapsed:.1f} s"


# What each server logs when SIGTERM arrived and it began its graceful shutdown.
SHUTDOWN_STARTED = re.compile(r"Handling signal: term|Shutting down|Received SIGTERM", re.I)


# The end-to-end stacks run with a short grace, so a stop that has to give up on a
# request takes seconds, not the default 25.
E2E_GRACEFUL_TIMEOUT_SECONDS = 6


def check_stop_lets_an_in_flight_request_finish(
    stack: ComposeStack, context: dict[str, Any]
) -> None:
    """SIGTERM arrives while one request is half sent and another will never be whole:
    the first gets its answer, the server gives up on the second within its grace, the
    lifespan's shutdown runs, and the container exits 0, before any SIGKILL."""
    port = stack.port("app", 8000)
    if context["include_example_api"]:
        body = b'{"name": "in flight"}'
        head = b"POST /api/items HTTP/1.1\r\nContent-Type: application/json\r\n" + b"".join(
            f"{name}: {value}\r\n".encode() for name, value in stack.auth.items()
        )
        expected = b"HTTP/1.1 201"
    else:
        # No route takes a body: a POST to a GET route is answered (405) once it is read.
        body = b"{}"
        head = b"POST /health/live HTTP/1.1\r\nContent-Type: application/json\r\n"
        expected = b"HTTP/1.1 405"
    request = (
        head + b"Host: test\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + body[:1]
    )  # fmt: skip
    with (
        socket.create_connection(("127.0.0.1", port), timeout=40) as conn,
        socket.create_connection(("127.0.0.1", port), timeout=40) as stuck,
    ):
        conn.sendall(request)
        stuck.sendall(request)  # the rest of this body never comes
        time.sleep(0.5)  # the server has the headers and awaits the rest of the body
        since = stack.compose("exec", "-T", "app", "date", "-u", "+%Y-%m-%dT%H:%M:%S").stdout
        stopping = threading.Thread(target=stack.compose, args=("stop", "app"))
        stopped_at = time.monotonic()
        stopping.start()
        deadline = time.monotonic() + 20
        while True:
            logs = stack.compose("logs", "--no-color", "--since", since.strip(), "app").stdout
            if SHUTDOWN_STARTED.search(logs):
                break
            assert time.monotonic() < deadline, f"no shutdown log line after SIGTERM:\n{logs}"
            time.sleep(0.2)
        conn.sendall(body[1:])
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
        stopping.join(timeout=60)
        took = time.monotonic() - stopped_at
    assert response.startswith(expected), response[:200]
    state = stack.inspect("app")["State"]
    assert state["Running"] is False
    # 0, not 137: the server finished on its own, before the grace period's SIGKILL.
    assert state["ExitCode"] == 0, f"exit code {state['ExitCode']}"
    after = stack.compose("logs", "--no-color", "--no-log-prefix", "--since", since.strip(), "app")
    messages = [json.loads(line).get("message") for line in after.stdout.splitlines() if line]
    # The stuck request did not hold its worker until it was killed: every worker's
    # lifespan shutdown ran (pools closed, last lines written) within the grace.
    workers = int(stack.dotenv()["WEB_CONCURRENCY"])
    assert messages.count("stopping") == workers, after.stdout[-3000:]
    assert took < E2E_GRACEFUL_TIMEOUT_SECONDS + 5, f"the stop took {took:.1f} s"


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=pytest.mark.xdist_group(f"docker-{v}")) for v in E2E_VARIANTS]
)
def test_compose_stack_end_to_end(
    variant: str,
    tmp_path: Path,
    compose_stack: Callable[[Path, str], ComposeStack],
    record_property: Callable[[str, object], None],
) -> None:
    answers = {**VARIANTS[variant], "project_name": f"E2E {variant}"}
    context = context_of(**answers)
    project = bake(tmp_path, **answers)
    with (project / ".env").open("a") as env:
        env.write(f"GRACEFUL_TIMEOUT_SECONDS={E2E_GRACEFUL_TIMEOUT_SECONDS}\n")
    stack = compose_stack(project, variant)

    started = time.monotonic()
    stack.up(build=True)
    record_property(
        "figure", f"{variant}: first build and start {time.monotonic() - started:.1f} s"
    )

    check_stack_started_in_order(stack, context)
    check_health_endpoints(stack, context)
    if context["include_example_api"]:
        check_manual_migration_commands(stack, context)
        check_item_survives_app_restart(stack)
    if context["use_worker"]:
        check_worker_processes_a_job(stack)
    check_non_root_and_image_healthcheck(stack)
    check_app_logs_are_json_lines(stack)
    record_property("figure", f"{variant}: {check_runtime_image_is_lean(stack, context)}")
    record_property("figure", f"{variant}: {check_code_change_reuses_dependency_layer(stack)}")
    check_stop_lets_an_in_flight_request_finish(stack, context)

    stack.down()
    assert stack.leftovers() == {"containers": [], "volumes": [], "networks": []}

"""Layer 5: the local overlay's rendered pod specs, run under Docker as a kubelet would.

One image (the default bake) is built once. PostgreSQL and Redis run from the
overlay's own images, commands and env, on a private network under their
Service names, so the app's Secret URLs resolve as in the cluster. Then, in
order: the Deployment's wait-for-schema init container waits; the migration
Job's container exits 0; the init container lets go; the app container passes
its startup, readiness and liveness probes polled with the spec's periods and
thresholds; and a stop (preStop pause, then SIGTERM) lets an in-flight
request finish within terminationGracePeriodSeconds.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import machine_load, require_docker, run
from tests.kubelet import (
    docker,
    docker_run_command,
    exec_probe,
    http_probe,
    published_port,
    resolve_env,
    run_probe,
)
from tests.kubernetes import baked, context, one, render_text

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("kubernetes-docker")]

COMBINATION = "default"


class Pods:
    """The rendered local overlay, its built image and the containers started from it."""

    def __init__(self, project: Path, docs: list[dict[str, Any]]) -> None:
        self.project = project
        self.docs = docs
        self.id = f"fdt-k8s-{uuid.uuid4().hex[:8]}"
        self.network = self.id
        self.image = f"{self.id}:local"
        self.containers: list[str] = []
        slug = context(COMBINATION)["project_slug"]
        self.deployment = one(docs, "Deployment", slug)
        self.job = one(docs, "Job")
        self.pod = self.deployment["spec"]["template"]["spec"]
        self.app = next(c for c in self.pod["containers"] if c["name"] == "app")
        self.spec_image = self.app["image"]

    def build(self) -> None:
        # Compose builds with BuildKit (the Dockerfile's cache mounts need it)
        # under a name of our own, so parallel tests never share a tag.
        compose = self.project.parent / f"{self.id}-build.yaml"
        compose.write_text(
            yaml.safe_dump(
                {"services": {"image": {"build": str(self.project), "image": self.image}}}
            )
        )
        with machine_load(exclusive=False):
            run(
                ["docker", "compose", "-f", str(compose), "-p", self.id, "build"],
                self.project,
                timeout=900,
            )

    def start(
        self,
        pod: dict[str, Any],
        container: dict[str, Any],
        suffix: str,
        *,
        alias: str | None = None,
        publish: bool = False,
        hardened: bool = True,
    ) -> str:
        name = f"{self.id}-{suffix}"
        image = self.image if container["image"] == self.spec_image else container["image"]
        if hardened:
            command = docker_run_command(
                pod,
                container,
                self.docs,
                name=name,
                network=self.network,
                image=image,
                publish=publish,
            )
        else:
            # The databases' stand-in images here differ from the official ones in
            # their users; run them with the spec's image, command, args and env only.
            bare = {
                k: v
                for k, v in container.items()
                if k not in {"securityContext", "volumeMounts", "resources"}
            }
            command = docker_run_command(
                {}, bare, self.docs, name=name, network=self.network, image=image
            )
        if alias:
            command[command.index("--network") + 2 : command.index("--network") + 2] = [
                "--network-alias",
                alias,
            ]
        docker(*command[1:])
        self.containers.append(name)
        return name

    def logs(self, name: str) -> str:
        result = docker("logs", name, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        for name in self.containers:
            docker("rm", "--force", "--volumes", name, check=False)
        docker("network", "rm", self.network, check=False)
        docker("image", "rm", "--force", self.image, check=False)


def wait_exit(name: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = docker(
            "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name
        ).stdout.split()
        if state[0] == "exited":
            return int(state[1])
        time.sleep(0.5)
    raise AssertionError(f"{name} still running after {seconds:.0f} s")


# Session scope, not module: a worker may run other modules' tests in between,
# and a module fixture would then be torn down and rebuilt.
@pytest.fixture(scope="session")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    require_docker()
    project = baked(COMBINATION, tmp_path_factory)
    docs = [d for d in yaml.safe_load_all(render_text(project, "local")) if d]
    pods = Pods(project, docs)
    assert pods.spec_image == f"{context(COMBINATION)['project_slug']}:local"
    try:
        pods.build()
        docker("network", "create", pods.network)
        for service in ("postgres", "redis"):
            statefulset = one(docs, "StatefulSet", service)
            template = statefulset["spec"]["template"]["spec"]
            container = template["containers"][0]
            name = pods.start(template, container, service, alias=service, hardened=False)
            # Ready by the spec's own readiness command, polled as the kubelet would.
            run_probe({**container["startupProbe"]}, lambda probe, n=name: exec_probe(probe, n))
        yield pods
    finally:
        pods.remove()


@pytest.fixture(scope="session")
def migrated(pods: Pods, record_property_module: list[str]) -> Pods:
    gate_spec = pods.pod["initContainers"][0]
    gate = pods.start(pods.pod, gate_spec, "wait-for-schema")
    # The init container must say it waits, and keep waiting: nothing has migrated yet.
    deadline = time.monotonic() + 90
    while "waiting for the migration Job" not in pods.logs(gate) and time.monotonic() < deadline:
        time.sleep(1)
    time.sleep(3)  # at least one more round of its loop
    state = docker("inspect", "--format", "{{.State.Status}}", gate).stdout.strip()
    assert state == "running", f"wait-for-schema {state} before the Job ran:\n{pods.logs(gate)}"
    assert "waiting for the migration Job" in pods.logs(gate)
    job_pod = pods.job["spec"]["template"]["spec"]
    started = time.monotonic()
    job = pods.start(job_pod, job_pod["containers"][0], "migrate")
    code = wait_exit(job, min(pods.job["spec"]["activeDeadlineSeconds"], 180))
    assert code == 0, pods.logs(job)
    record_property_module.append(
        f"migration Job container: exit 0 in {time.monotonic() - started:.1f} s"
    )
    assert wait_exit(gate, 30) == 0, pods.logs(gate)
    return pods


@pytest.fixture(scope="session")
def record_property_module() -> list[str]:
    return []


def start_app(pods: Pods, suffix: str) -> tuple[str, str]:
    """Start an app pod and poll its probes as the kubelet does: startup first,
    then readiness and liveness. Returns the container and what the probes took."""
    name = pods.start(pods.pod, pods.app, suffix, publish=True)
    ports = {p["name"]: p["containerPort"] for p in pods.app["ports"]}
    host = {port: published_port(name, port) for port in ports.values()}
    started = time.monotonic()

    def probe(spec: dict[str, Any]) -> bool:
        return http_probe(spec, ports, host)

    try:
        startup = run_probe(pods.app["startupProbe"], probe)
        ready = run_probe(pods.app["readinessProbe"], probe)
        alive = run_probe(pods.app["livenessProbe"], probe)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{pods.logs(name)[-4000:]}") from None
    return name, (
        f"app pod: started after {startup} startup probe(s), ready after {ready}, "
        f"live after {alive}; {time.monotonic() - started:.1f} s"
    )


@pytest.fixture(scope="session")
def app(migrated: Pods) -> tuple[str, str]:
    return start_app(migrated, "app")


def test_the_job_migrates_and_the_gate_waits_for_it(
    migrated: Pods, record_property: Any, record_property_module: list[str]
) -> None:
    for figure in record_property_module:
        record_property("figure", figure)
    env = resolve_env(migrated.job["spec"]["template"]["spec"]["containers"][0], migrated.docs)
    assert set(env) == {"DATABASE_URL", "MIGRATION_CONNECT_TIMEOUT_SECONDS"}
    assert "@postgres:5432/" in env["DATABASE_URL"]


def test_app_probes_pass_as_the_kubelet_polls_them(
    app: tuple[str, str], record_property: Any
) -> None:
    # start_app raised if a probe reached its failureThreshold.
    name, figure = app
    assert docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip() == "true"
    record_property("figure", figure)


def test_app_runs_with_the_spec_hardening_in_effect(migrated: Pods, app: tuple[str, str]) -> None:
    name = app[0]
    script = """
import os, pathlib
status = pathlib.Path("/proc/self/status").read_text().splitlines()
print(os.getuid(), os.getgid())
print([line.split()[1] for line in status if line.startswith(("CapEff", "NoNewPrivs"))])
pathlib.Path("/tmp/ok").write_text("x")
try:
    pathlib.Path("/app/x").write_text("x")
except OSError as error:
    print("ro", error.errno)
"""
    out = docker("exec", name, "python", "-c", script).stdout.splitlines()
    assert out[0] == "10001 10001"
    assert out[1] == "['0000000000000000', '1']", out[1]
    assert out[2] == "ro 30", "the root file system is writable"  # EROFS
    inspect = docker(
        "inspect", "--format", "{{.HostConfig.Memory}} {{.HostConfig.ReadonlyRootfs}}", name
    ).stdout.split()
    assert inspect == ["536870912", "true"]


def test_stop_drains_then_finishes_the_in_flight_request(
    migrated: Pods, record_property: Any
) -> None:
    # A pod of its own, so stopping it leaves the other tests' pod alone.
    app, _ = start_app(migrated, "app-stopped")
    port = published_port(app, 8000)
    pre_stop = migrated.app["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = migrated.pod["terminationGracePeriodSeconds"]
    body = b'{"name": "in flight"}'
    result: dict[str, Any] = {}
    sigterm_sent = threading.Event()

    def kubelet_stop() -> None:
        started = time.monotonic()
        time.sleep(pre_stop)  # the preStop sleep action; the app still serves meanwhile
        result["served_during_prestop"] = http_probe(
            {"httpGet": {"path": "/health/live", "port": 8000}, "timeoutSeconds": 2},
            {},
            {8000: port},
        )
        docker("kill", "--signal", "TERM", app)
        sigterm_sent.set()
        try:
            result["exit"] = wait_exit(app, grace - (time.monotonic() - started))
        except AssertionError:
            docker("kill", app, check=False)  # SIGKILL at the end of the grace period
            result["exit"] = "killed"
        result["seconds"] = time.monotonic() - started

    with socket.create_connection(("127.0.0.1", port), timeout=grace + 5) as conn:
        # "Expect: 100-continue": the server answers "100 Continue" only once the
        # endpoint reads the body, so the request is provably in flight.
        conn.sendall(
            b"POST /api/items HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\nConnection: close\r\n\r\n"
        )
        try:
            interim = conn.recv(65536)
        except OSError as error:
            state = docker("inspect", "--format", "{{json .State}}", app).stdout
            raise AssertionError(f"{error!r}\n{state}\n{migrated.logs(app)[-3000:]}") from None
        assert interim.startswith(b"HTTP/1.1 100"), interim
        stopping = threading.Thread(target=kubelet_stop)
        stopping.start()
        assert sigterm_sent.wait(timeout=grace), "the stop never reached SIGTERM"
        time.sleep(1)  # the server is shutting down with the request open
        conn.sendall(body)
        response = b""
        while chunk := conn.recv(65536):
            response += chunk
    stopping.join(timeout=grace + 10)
    assert result["served_during_prestop"], "the pod stopped serving during its preStop pause"
    assert response.startswith(b"HTTP/1.1 201"), response[:300]
    assert result["exit"] == 0, f"{result}\n{migrated.logs(app)[-3000:]}"
    assert result["seconds"] < grace
    record_property(
        "figure",
        f"pod stop: preStop {pre_stop} s + SIGTERM, exited 0 after "
        f"{result['seconds']:.1f} s of {grace} s grace",
    )

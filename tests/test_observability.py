"""Logs, metrics and traces of the generated service, checked on real servers.

The access-log cases run each server choice on this machine (no Docker); the
stack cases build the default service with tracing on, run it with three
workers next to an OTLP/HTTP receiver, and read what a scrape and a trace show.
"""

from __future__ import annotations

import json
import os
import shutil
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
from tests.helpers import IN_CI, VARIANTS, bake, require_docker, run

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
    # What an earlier run left behind: the server must empty the directory at start.
    stale = project / "metrics" / "counter_999999.db"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"stale")
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
                assert time.monotonic() < deadline, (
                    "the server did not start\n" + output.read_text()
                )
                time.sleep(0.2)
            assert not stale.exists(), "the metrics directory was not emptied at start"
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
    # From a trusted proxy (FORWARDED_ALLOW_IPS=127.0.0.1): the client is the one it names.
    forwarded = {"X-Request-ID": "marked-fwd", "X-Forwarded-For": "203.0.113.9"}
    httpx.get(f"{base}/health/live", headers=forwarded, timeout=5)


@pytest.mark.xdist_group("observability-host")
@pytest.mark.parametrize(("level", "expected"), [("INFO", 7), ("WARNING", 0)])
def test_the_app_writes_the_only_access_lines_and_log_level_governs_them(
    server_project: tuple[str, Path], level: str, expected: int
) -> None:
    variant, project = server_project
    settings = {"LOG_LEVEL": level, "ACCESS_LOG_PROBES": "true", "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    output = serve_and_collect(project, settings, send_marked_requests)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    # No server access line in any form: uvicorn's, gunicorn's, or as plain text.
    assert not [line for line in lines if line["logger"] in {"uvicorn.access", "gunicorn.access"}]
    assert not [line for line in lines if "HTTP/1.1" in str(line["message"])], variant
    marked = [
        line
        for line in lines
        if line["logger"] == "my_service.access"
        and str(line.get("request_id")).startswith("marked")
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
        assert by_id["marked-fwd"]["client"] == "203.0.113.9"


# --- metrics and traces on the real stack ----------------------------------------------------

RECEIVER = '''
"""An OTLP/HTTP trace receiver for the test: decodes each export, serves the spans as JSON."""
import gzip, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

SPANS, LOCK = [], threading.Lock()


def plain(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        with LOCK:
            for resource_spans in export.resource_spans:
                resource = {a.key: plain(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        SPANS.append({
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "attributes": {a.key: plain(a.value) for a in span.attributes},
                            "service": resource.get("service.name"),
                        })
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with LOCK:
            body = json.dumps(SPANS).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("0.0.0.0", 4318), Handler).serve_forever()
'''

OVERRIDE = """
services:
  app:
    environment:
      WEB_CONCURRENCY: "3"
      ACCESS_LOG_PROBES: "true"
      OTEL_EXPORTER_OTLP_ENDPOINT: http://otlp-receiver:4318
      OTEL_BSP_SCHEDULE_DELAY: "200"
    depends_on:
      otlp-receiver:
        condition: service_healthy
  otlp-receiver:
    build: .
    image: {slug}:latest
    command: ["python", "/receiver/receiver.py"]
    volumes:
      - ./otlp_receiver:/receiver:ro
    ports:
      - "127.0.0.1::4318"
    healthcheck:
      test: ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4318/')"]
      interval: 1s
      retries: 60
"""

STACK_GROUP = pytest.mark.xdist_group("observability-stack")


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def observed_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    """The default service with tracing on, three workers, and a trace receiver beside it,
    under each server choice."""
    require_docker()
    server: str = request.param
    project = bake(
        tmp_path_factory.mktemp(f"observe-{server}"),
        project_name=f"Observe {server}",
        use_tracing=True,
        server=server,
    )
    (project / "otlp_receiver").mkdir()
    (project / "otlp_receiver" / "receiver.py").write_text(RECEIVER)
    # The receiver runs on the service's own image: it has opentelemetry-proto.
    (project / "compose.observe.yaml").write_text(OVERRIDE.replace("{slug}", project.name))
    stack = ComposeStack(project, f"observe-{server}")
    stack.env["COMPOSE_FILE"] = "compose.yaml:compose.observe.yaml"
    try:
        stack.up(build=True)
        yield stack
    finally:
        stack.down()


@pytest.fixture
def stack(observed_stack: ComposeStack, request: pytest.FixtureRequest) -> ComposeStack:
    request.node.stash[STACKS_KEY] = [observed_stack]
    return observed_stack


def parse_exposition(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text format, read without prometheus_client: (name, labels, value)."""
    import re

    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        assert match is not None, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        samples.append((match.group(1), labels, float(match.group(3))))
    return samples


def item_requests(samples: list[tuple[str, dict[str, str], float]], name: str) -> float:
    wanted = {"method": "GET", "route": "/api/items/{item_id}", "status": "200"}
    return sum(value for sample, labels, value in samples if sample == name and labels == wanted)


@pytest.mark.docker
@STACK_GROUP
def test_every_scrape_counts_every_worker_exactly(
    stack: ComposeStack, record_property: Callable[[str, object], None]
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    created = stack.post("/api/items", json={"name": "counted"}, timeout=10)
    assert created.status_code == 201, created.text
    item_url = stack.url(f"/api/items/{created.json()['id']}")
    sent = 60

    def unmatched_requests(samples: list[tuple[str, dict[str, str], float]]) -> float:
        return sum(
            value
            for name, labels, value in samples
            if name == "http_requests_total" and labels["route"] == "unmatched"
        )

    # The stack is shared: other tests' requests are in the totals, in any order. Only
    # what this test adds is compared, with nothing else sending while it runs (one
    # xdist group), so every scrape must show exactly this test's requests on top.
    baseline = parse_exposition(stack.get("/metrics").text)
    items_before = item_requests(baseline, "http_requests_total")
    durations_before = item_requests(baseline, "http_request_duration_seconds_count")
    unmatched_before = unmatched_requests(baseline)

    def fetch(_: int) -> int:
        # A new connection per request, several at once: the workers share them.
        return httpx.get(item_url, timeout=10, headers=stack.auth).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(fetch, range(sent))) == [200] * sent
    scanned = [f"/scan/{uuid.uuid4().hex}" for _ in range(7)]
    for path in scanned:
        assert stack.get(path).status_code == 404

    for _ in range(8):
        scrape = stack.get("/metrics")
        assert scrape.status_code == 200
        assert scrape.headers["content-type"].startswith("text/plain")
        samples = parse_exposition(scrape.text)
        assert item_requests(samples, "http_requests_total") - items_before == sent
        assert (
            item_requests(samples, "http_request_duration_seconds_count") - durations_before == sent
        )
        buckets = [s for s in samples if s[0] == "http_request_duration_seconds_bucket"]
        assert buckets and any(labels.get("le") == "+Inf" for _, labels, _ in buckets)
        assert unmatched_requests(samples) - unmatched_before == len(scanned)
        label_values = {value for _, labels, _ in samples for value in labels.values()}
        assert not [v for v in label_values if v.startswith(("/scan/", "/api/items/1"))]
        assert {"db_pool_connections_in_use", "db_pool_overflow", "http_requests_in_progress"} <= {
            name for name, _, _ in samples
        }
    files = stack.compose("exec", "-T", "app", "ls", "/dev/shm/metrics").stdout.split()
    live = [f for f in files if f.startswith("gauge_livesum_")]
    counting = [f for f in files if f.startswith("counter_")]
    assert len(live) == 3, files  # one per worker
    assert len(counting) >= 2, f"one worker answered everything, nothing was summed: {files}"
    record_property("figure", f"{sent} requests counted exactly by {len(counting)} workers")


@pytest.mark.docker
@STACK_GROUP
def test_a_request_is_one_trace_with_its_sql_and_redis_spans(stack: ComposeStack) -> None:
    marker = f"trace-{uuid.uuid4().hex[:8]}"
    checked = httpx.get(
        stack.url("/health/dependencies"), headers={"X-Request-ID": marker}, timeout=10
    )
    assert checked.status_code == 200
    receiver = f"http://127.0.0.1:{stack.port('otlp-receiver', 4318)}/"
    deadline = time.monotonic() + 30
    trace: list[dict[str, Any]] = []
    trace_id = ""
    while time.monotonic() < deadline:
        logs = stack.compose("logs", "--no-color", "--no-log-prefix", "app").stdout
        lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
        access = [line for line in lines if line.get("request_id") == marker]
        if access:
            trace_id = access[0]["trace_id"]
            assert all(line["trace_id"] == trace_id for line in access)
            trace = [s for s in httpx.get(receiver, timeout=5).json() if s["trace_id"] == trace_id]
            if len(trace) >= 3:
                break
        time.sleep(0.5)
    assert trace_id, "no log line for the traced request"
    [server] = [s for s in trace if s["parent_span_id"] == ""]
    assert server["attributes"].get("http.route") == "/health/dependencies"
    assert server["service"] == stack.project.name  # the project slug
    children = [s for s in trace if s["parent_span_id"] == server["span_id"]]
    names = [s["name"] for s in children]
    assert any(name.startswith("SELECT") for name in names), names
    assert "PING" in names, names


@pytest.mark.docker
@STACK_GROUP
def test_a_prometheus_server_scrapes_the_exact_count(stack: ComposeStack, tmp_path: Path) -> None:
    """Debian's prometheus scrapes the published port; PromQL sees every request once."""
    binary = shutil.which("prometheus")
    if binary is None:
        if IN_CI:
            pytest.fail("prometheus is missing; .ci/run installs it", pytrace=False)
        pytest.skip("prometheus (the Debian package) is not installed")
    port = free_port()
    app = f"127.0.0.1:{stack.port('app', 8000)}"
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: service\n    static_configs: [{{targets: ['{app}']}}]\n"
    )
    server = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    query = 'sum(http_requests_total{route="/api/items/{item_id}",status="200"})'

    def promql() -> float | None:
        try:
            answer = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
            ).json()
        except httpx.HTTPError:
            return None
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        created = stack.post("/api/items", json={"name": "scraped"}, timeout=10)
        item_url = stack.url(f"/api/items/{created.json()['id']}")
        before = item_requests(parse_exposition(stack.get("/metrics").text), "http_requests_total")
        sent = 25
        for _ in range(sent):
            assert httpx.get(item_url, timeout=10, headers=stack.auth).status_code == 200
        deadline = time.monotonic() + 60
        seen = promql()
        while seen != before + sent and time.monotonic() < deadline:
            time.sleep(1)
            seen = promql()
        assert seen == before + sent, f"PromQL says {seen}, expected {before + sent}"
    finally:
        server.terminate()
        server.wait(timeout=30)

"""The benchmark harness (bench/) works end to end: a smoke run, no timing asserted.

The figures themselves come from `uv run python -m bench` (see README.md); this
only proves that every step runs, every route answers under load without an
error, and the table and the JSON come out. It runs an auth=oidc bake with the worker,
whose steps are the default bake's plus the stand-in issuer (every /api request must
carry an accepted token: a 401 is an error of the run) and the jobs benchmark (the
service's worker and a bare taskiq worker each drain their queue, then the enqueue).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.harness import AUTH_OVERLAY, OVERLAY, WORKER_OVERLAY, Route, Stack
from tests.helpers import TEMPLATE_DIR, require_docker

ROUTES = {
    "GET /health/live",
    "GET /health/dependencies",
    "GET /api/items/{id}",
    "GET /api/items?limit=50",
    "POST /api/items",
}
# Every step of a default bake's run, and the stand-in issuer's and the jobs' besides.
SMOKE = [
    sys.executable, "-m", "bench", "--smoke", "--with", "auth=oidc", "--with", "use_worker=true",
]  # fmt: skip


@pytest.mark.docker
@pytest.mark.xdist_group("bench")
def test_bench_smoke_run_prints_the_table_and_writes_json(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    require_docker()
    # The harness takes the machine-wide lock itself; this test must not hold it.
    result = subprocess.run(
        [*SMOKE, "--results-dir", str(tmp_path)],
        cwd=TEMPLATE_DIR,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, output
    for route in ROUTES:
        assert f"| `{route}` |" in result.stdout, output
    assert "| RSS after load |" in result.stdout, output
    assert "| goal | measured | met |" in result.stdout, output
    assert "| token verification, CPU per request" in result.stdout, output
    assert "| jobs/s through one worker process (median) |" in result.stdout, output

    written = list(tmp_path.glob("*-smoke.json"))
    assert len(written) == 1, written
    data = json.loads(written[0].read_text())
    assert set(data["routes"]) == ROUTES
    assert data["errors"] == 0
    assert data["options"]["auth"] == "oidc"
    assert data["auth"]["verify_cpu_us"] > 0, data["auth"]
    jobs = data["jobs"]
    for worker in ("service", "bare"):
        # Every round drained its queue (the driver fails the run otherwise), in a time.
        assert len(jobs["seconds"][worker]) == jobs["rounds"] == 1, jobs
        assert jobs["jobs_per_second"][worker] > 0, jobs
        assert 0 < jobs["enqueue"][worker]["p50_us"] <= jobs["enqueue"][worker]["p99_us"], jobs
    record_property(
        "figure",
        f"bench smoke jobs: {jobs['jobs_ratio']:.2f} x bare taskiq (200 jobs, not a figure)",
    )
    for route, row in data["routes"].items():
        for target in ("service", "ceiling"):
            figures = row[target]
            assert figures["errors"] == 0, (route, target, figures)
            assert figures["rps"] > 0 and figures["p99_ms"] > 0, (route, target, figures)
        record_property(
            "figure", f"bench smoke {route}: {row['rps_ratio']:.2f} x ceiling (1 s, not a figure)"
        )
    for target in ("service", "ceiling"):
        # gunicorn's master and its two workers, both before and after the load.
        for moment in ("idle", "after_load"):
            assert len(data["memory"][target][moment]["processes"]) == 3, data["memory"]
    assert data["build"]["over_base_mb"] > 0
    assert data["up"]["first_200_seconds"] > 0
    assert data["versions"]["image"]["fastapi"]


def test_only_an_oidc_bake_gets_the_issuer_and_only_api_requests_the_token(
    tmp_path: Path,
) -> None:
    read, live = Route("read", "/api/items/1"), Route("live", "/health/live")
    (tmp_path / "default").mkdir()
    (tmp_path / "oidc").mkdir()
    default = Stack(tmp_path / "default", workers=2)
    assert default.compose_command("ps") == [
        "docker", "compose", "-f", "compose.yaml", "-f", OVERLAY.name, "ps",
    ]  # fmt: skip
    assert default.headers(read) == {}
    oidc = Stack(tmp_path / "oidc", workers=2, auth=True)
    assert oidc.compose_command("ps")[-3:] == ["-f", AUTH_OVERLAY.name, "ps"]
    assert (tmp_path / "oidc" / AUTH_OVERLAY.name).is_file()
    oidc.token = "a.b.c"
    assert oidc.headers(read) == {"Authorization": "Bearer a.b.c"}
    assert oidc.headers(live) == {}


def test_only_a_worker_bake_gets_the_jobs_overlay_and_its_package(tmp_path: Path) -> None:
    (tmp_path / "src" / "svc_core").mkdir(parents=True)
    (tmp_path / "src" / "svc_core.egg-info").touch()  # a file, not the package
    plain = Stack(tmp_path, workers=2)
    assert WORKER_OVERLAY.name not in plain.compose_command("ps")
    assert "BENCH_PACKAGE" not in plain.env
    worker = Stack(tmp_path, workers=2, worker=True)
    assert worker.compose_command("ps")[-3:] == ["-f", WORKER_OVERLAY.name, "ps"]
    assert worker.env["BENCH_PACKAGE"] == "svc_core"

"""The generated GitHub workflows pass on a service's first push, run the way a runner runs them.

tests/github_runner.py reproduces a hosted runner from the workflow file itself
(service containers, env, every step in order in a clean clone); these tests
run the generated jobs through it, and show that it can fail.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from tests.github_runner import NotReproducible, run_job, should_run
from tests.helpers import (
    TEMPLATE_DIR,
    VARIANTS,
    bake,
    context_of,
    machine_load,
    require_docker,
    run,
)
from tests.test_service_suite import assert_suite_passed

# The ports the jobs publish are the host's, so these tests take turns (and a
# lock per port keeps them apart from any other test that publishes one).
pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("github-runner")]

CI = Path(".github/workflows/ci.yml")

# One bake per shape of the test job: both services, only PostgreSQL, only
# Redis (with tracing). The other ci=github variants share one of these shapes.
SHAPES = ["default", "no-redis", "no-postgres"]


def test_every_service_shape_of_the_test_job_is_reproduced() -> None:
    shapes = {
        (context_of(**VARIANTS[name])["use_postgres"], context_of(**VARIANTS[name])["use_redis"])
        for name in VARIANTS
        if context_of(**VARIANTS[name])["ci"] == "github"
    }
    covered = {
        (context_of(**VARIANTS[name])["use_postgres"], context_of(**VARIANTS[name])["use_redis"])
        for name in SHAPES
    }
    assert shapes <= covered


@pytest.mark.parametrize("variant", SHAPES)
def test_the_ci_test_job_is_green_on_a_first_push(
    variant: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    require_docker()
    project = bake(tmp_path / "bake", **VARIANTS[variant])
    job = run_job(project, project / CI, "test", tmp_path / "runner")
    assert job.failed == [], job.report()
    ran = [step.name for step in job.steps if not step.skipped]
    workflow = yaml.safe_load((project / CI).read_text())
    # Every step but the weekly run's (tests/test_fleet.py runs that one).
    on_push = [
        step
        for step in workflow["jobs"]["test"]["steps"]
        if step.get("if") != "github.event_name == 'schedule'"
    ]
    assert len(on_push) == len(workflow["jobs"]["test"]["steps"]) - 1
    assert len(ran) == len(on_push), job.report()
    assert_suite_passed(job.step("pytest").output, record_property)


def test_the_image_job_brings_the_stack_up_on_a_first_push(tmp_path: Path) -> None:
    """image.yml: .env from the example (a push has none), build, up, readiness, down."""
    require_docker()
    project = bake(tmp_path / "bake")
    config = run(["docker", "compose", "config", "--format", "json"], project).stdout
    ports = [
        int(port["published"])
        for service in json.loads(config)["services"].values()
        for port in service.get("ports", [])
    ]
    assert 8000 in ports
    workflow = project / ".github/workflows/image.yml"
    with machine_load(exclusive=False):
        job = run_job(project, workflow, "compose", tmp_path / "runner", host_ports=ports)
    assert job.failed == [], job.report()
    assert '"status":"ok"' in job.step("health/dependencies").output.replace(" ", "")
    assert [s.name for s in job.steps if s.skipped] == ["Logs on failure"]


def advisories_reachable() -> bool:
    """PyPI's per-release JSON, where pip-audit reads the advisories of a pinned version."""
    try:
        with urllib.request.urlopen("https://pypi.org/pypi/pip/24.0/json", timeout=10):
            return True
    except (urllib.error.URLError, TimeoutError):
        return False


def test_the_audit_job_checks_the_exported_lock(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    project = bake(tmp_path / "bake")
    workflow = project / CI
    if not advisories_reachable():
        # This workplace's PyPI serves /pypi/<name>/json but answers 404 for
        # /pypi/<name>/<version>/json, and OSV does not resolve: everything up
        # to the lookup runs (export, hashes, pip-audit reading the file).
        document = yaml.safe_load(workflow.read_text())
        [audit] = [s for s in document["jobs"]["audit"]["steps"] if "pip-audit" in s.get("run", "")]
        audit["run"] += " --dry-run"
        workflow.write_text(yaml.safe_dump(document, sort_keys=False))
        record_property("figure", "audit: dry run (no advisory data reachable here)")
    job = run_job(project, workflow, "audit", tmp_path / "runner")
    assert job.failed == [], job.report()
    output = job.step("Audit").output
    audited = re.search(
        r"(?:would have audited|audited) (\d+) packages|No known vulnerabilities", output
    )
    assert audited is not None, output
    # Every exported requirement that applies on this platform (the Windows-only
    # ones are not installed, so not audited).
    exported = (tmp_path / "runner" / "runner-temp" / "requirements.txt").read_text()
    applying = [
        Requirement(line.rstrip(" \\")) for line in exported.splitlines() if line[:1].isalnum()
    ]
    expected = [r for r in applying if r.marker is None or r.marker.evaluate()]
    assert 50 < len(expected) < len(applying)
    if audited[1] is not None:
        assert int(audited[1]) == len(expected), output


# --- The reproduction itself can fail --------------------------------------


def test_a_service_the_tests_need_but_the_job_lacks_makes_it_red(tmp_path: Path) -> None:
    require_docker()
    project = bake(tmp_path / "bake")
    workflow = project / CI
    document: dict[str, Any] = yaml.safe_load(workflow.read_text())
    test = document["jobs"]["test"]
    del test["services"]["redis"]
    # Only the Redis tests, so the red comes from the missing service alone.
    [pytest_step] = [s for s in test["steps"] if s.get("run") == "uv run pytest"]
    pytest_step["run"] = "uv run pytest --no-cov -p no:cacheprovider tests/test_cache.py"
    test["steps"] = [s for s in test["steps"] if "uses" in s or "sync" in s.get("run", "")] + [
        pytest_step
    ]
    workflow.write_text(yaml.safe_dump(document, sort_keys=False))
    job = run_job(project, workflow, "test", tmp_path / "runner")
    [failed] = job.failed
    assert "pytest" in failed.command
    # The generated suite stops at once, naming the service it could not reach.
    assert re.search(r"Redis at \S+:6379\S* is unreachable", failed.output), failed.output


def write_workflow(project: Path, steps: list[dict[str, Any]], **job: Any) -> Path:
    workflow = project / "w.yml"
    document = {"on": "push", "jobs": {"j": {"runs-on": "ubuntu-latest", **job, "steps": steps}}}
    workflow.write_text(yaml.safe_dump(document))
    return workflow


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    project = tmp_path / "repo"
    project.mkdir()
    (project / "README").write_text("committed\n")
    (project / ".gitignore").write_text(".env\n")
    (project / ".env").write_text("SECRET=ignored\n")
    return project


def test_a_failing_step_fails_the_job_and_only_failure_steps_follow(
    repository: Path, tmp_path: Path
) -> None:
    steps = [
        {"run": "test -f README && test ! -e .env"},
        {"name": "broken", "run": "exit 3"},
        {"name": "after", "run": "true"},
        {"name": "on failure", "if": "failure()", "run": "echo reported"},
        {"name": "always", "if": "${{ always() }}", "run": "true"},
    ]
    job = run_job(repository, write_workflow(repository, steps), "j", tmp_path / "runner")
    assert [(s.name, s.returncode, s.skipped) for s in job.steps] == [
        ("test -f README && test ! -e .env", 0, False),
        ("broken", 3, False),
        ("after", 0, True),
        ("on failure", 0, False),
        ("always", 0, False),
    ]


def test_bash_steps_fail_on_the_first_failing_command_and_env_carries_over(
    repository: Path, tmp_path: Path
) -> None:
    steps = [
        {"run": 'echo "FROM_STEP=1" >> "$GITHUB_ENV"'},
        {"name": "reads", "run": 'test "$FROM_STEP$JOB_LEVEL" = 1job'},
        {"name": "pipefail", "shell": "bash", "run": "false | true\necho unreachable"},
    ]
    workflow = write_workflow(repository, steps, env={"JOB_LEVEL": "job"})
    job = run_job(repository, workflow, "j", tmp_path / "runner")
    assert [s.returncode for s in job.steps] == [0, 0, 1]
    assert "unreachable" not in job.steps[2].output


def test_an_unhealthy_service_stops_the_job_before_its_steps(
    repository: Path, tmp_path: Path
) -> None:
    require_docker()
    services = {
        "db": {
            "image": "redis:8",
            "options": "--health-cmd false --health-interval 1s --health-retries 2",
        }
    }
    workflow = write_workflow(repository, [{"run": "true"}], services=services)
    with pytest.raises(RuntimeError, match="unhealthy"):
        run_job(repository, workflow, "j", tmp_path / "runner")


def test_what_cannot_be_reproduced_is_refused_not_skipped(repository: Path, tmp_path: Path) -> None:
    for step in (
        {"uses": "some/action@0000000000000000000000000000000000000000"},
        {"run": "echo ${{ secrets.TOKEN }}"},
        {"shell": "pwsh", "run": "Write-Host"},
    ):
        workflow = write_workflow(repository, [step])
        with pytest.raises(NotReproducible):
            run_job(repository, workflow, "j", tmp_path / f"runner-{len(str(step))}")
    with pytest.raises(NotReproducible):
        should_run("github.event_name == 'push'", failed=False, contexts={})


# --- The template's own workflows -------------------------------------------


def kind_matrix() -> list[dict[str, Any]]:
    document = yaml.safe_load((TEMPLATE_DIR / ".github/workflows/kubernetes.yml").read_text())
    include: list[dict[str, Any]] = document["jobs"]["kind"]["strategy"]["matrix"]["include"]
    return include


@pytest.mark.parametrize("matrix", kind_matrix(), ids=lambda m: str(m["name"]))
def test_the_kind_workflow_bakes_each_matrix_entry(matrix: dict[str, Any], tmp_path: Path) -> None:
    """Every step before the cluster exists runs here; the cluster steps need kind's node
    image from a registry, and layers 1 to 5 (tests/test_kubernetes*.py) stand in for them."""
    job = run_job(
        TEMPLATE_DIR,
        TEMPLATE_DIR / ".github/workflows/kubernetes.yml",
        "kind",
        tmp_path,
        matrix=matrix,
    )
    assert job.failed == [], job.report()
    ran = [s.name for s in job.steps if not s.skipped]
    assert ran[-2:] == ["Bake the service", "Point the service at a real OpenID Connect issuer"]
    baked = tmp_path / "runner-temp" / "my-service"
    assert (baked / "Dockerfile").is_file()
    # auth=oidc (every entry: the default): the ConfigMap names GitHub's issuer, whose
    # discovery document /health/dependencies can fetch on the runner.
    base = (baked / "deploy/kubernetes/base/kustomization.yaml").read_text()
    issuers = re.findall(r"AUTH_ISSUER_URL=(\S+)", base)
    assert issuers == ["https://token.actions.githubusercontent.com"], base
    assert ("migrations" in {p.name for p in baked.iterdir()}) == matrix["postgres"]
    assert job.not_run[0][0].startswith("helm/kind-action")

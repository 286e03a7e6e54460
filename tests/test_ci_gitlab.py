"""The generated GitLab pipeline, run with gitlab-ci-local and its Docker executor.

gitlab-ci-local reads the baked `.gitlab-ci.yml` itself, validates it against
GitLab's schema, and runs its jobs in containers with their services, the way a
GitLab runner's Docker executor does. The bake is committed to a fresh git
repository as it would be pushed: untracked and ignored files (`.env`) stay out,
because gitlab-ci-local copies only what git tracks into the job.

.ci/gitlab-ci-local/setup installs the tool and the helper images it needs.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import IN_CI, TEMPLATE_DIR, bake, machine_load, require_docker, run

# Pinned here, read by .ci/gitlab-ci-local/setup (one place for both).
GITLAB_CI_LOCAL_VERSION = "4.75.1"
NODE_VERSION = "22.23.5"
# The job image used in place of python:3.13-slim-trixie where that is the
# docker-offline stand-in, which lacks the official image's pip.
PIP_JOB_IMAGE = "gitlab-ci-local-standin/python:3.13-slim-trixie"

GITLAB_CI_LOCAL = TEMPLATE_DIR / ".ci" / ".tools" / "bin" / "gitlab-ci-local"
PYTHON_IMAGE = "python:3.13-slim-trixie"
DIND_IMAGES = ("docker:28-cli", "docker:28-dind")
# One worker runs the module: the jobs share one bake and one pipeline run.
pytestmark = pytest.mark.xdist_group("gitlab-ci-local")
GIT = ["git", "-c", "user.name=CI", "-c", "user.email=ci@example.com"]


def require_gitlab_ci_local() -> None:
    """Skip where setup never ran; fail loudly in CI, where .ci/run runs it."""
    version = ""
    if GITLAB_CI_LOCAL.exists():
        result = subprocess.run(
            [str(GITLAB_CI_LOCAL), "--version"], capture_output=True, text=True, check=False
        )
        version = result.stdout.strip()
    if version == GITLAB_CI_LOCAL_VERSION:
        return
    message = (
        f"gitlab-ci-local {GITLAB_CI_LOCAL_VERSION} is not at {GITLAB_CI_LOCAL} "
        f"(found {version or 'nothing'}); run .ci/gitlab-ci-local/setup"
    )
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def gitlab_ci_local(
    project: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run gitlab-ci-local in a project; never pulls what this engine already has."""
    command = [
        str(GITLAB_CI_LOCAL),
        "--color=false",
        "--pull-policy=if-not-present",
        # Job names unpadded, so a line reads "JOB $ LINE" however many jobs run.
        "--max-job-name-padding=0",
        # The default 30 s is short for a first PostgreSQL start beside other
        # tests on two cores; GitLab's runner waits for services longer too.
        "--wait-for-services-timeout=120",
        # Python's requests trusts certifi's bundle, not the system one; the job
        # images here carry this machine's CA bundle (its proxy's CA) at the
        # system path. On GitLab the variable is harmless: the same file exists.
        "--variable=REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
        *args,
    ]
    return run(command, project, timeout=timeout, check=False)


def output_of(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


def first_push(path: Path) -> Path:
    """A default bake with GitLab CI, committed as the first push of a new service."""
    project = bake(path, ci="gitlab")
    run(["git", "init", "--quiet", "--initial-branch=main"], project)
    run([*GIT, "add", "--all"], project)
    run([*GIT, "commit", "--quiet", "--message=Initial commit"], project)
    # A remote, as on GitLab: gitlab-ci-local derives CI_PROJECT_PATH from it.
    run(["git", "remote", "add", "origin", "git@gitlab.example.com:acme/my-service.git"], project)
    run(["git", "update-ref", "refs/remotes/origin/main", "HEAD"], project)
    run(["git", "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main"], project)
    return project


def clone(project: Path, path: Path) -> Path:
    """Another checkout of the pushed commit, to change without touching the first."""
    run(["git", "clone", "--quiet", str(project), str(path)], project.parent)
    return path


def commit_edit(project: Path, old: str, new: str, message: str, count: int = -1) -> None:
    """Replace text in the checkout's .gitlab-ci.yml (it must be there) and commit it."""
    pipeline = project / ".gitlab-ci.yml"
    text = pipeline.read_text()
    assert old in text, f"{old!r} is not in the generated .gitlab-ci.yml"
    pipeline.write_text(text.replace(old, new, count))
    run([*GIT, "commit", "--quiet", "--all", f"--message={message}"], project)


def python_image_has_pip() -> bool:
    probe = ["docker", "run", "--rm", "--entrypoint", "sh", PYTHON_IMAGE, "-c", "command -v pip"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def use_job_image_with_pip(project: Path) -> None:
    """Where python:3.13-slim-trixie is the pip-less stand-in, run the jobs in it plus pip.

    The official image has pip and the jobs install uv with it; the docker-offline
    stand-in has Debian's Python without pip. Only the image name changes: every
    line the jobs run stays as generated.
    """
    if python_image_has_pip():
        return
    inspect = ["docker", "image", "inspect", PIP_JOB_IMAGE]
    if subprocess.run(inspect, capture_output=True, check=False).returncode != 0:
        pytest.fail(f"{PIP_JOB_IMAGE} is missing; run .ci/gitlab-ci-local/setup", pytrace=False)
    commit_edit(
        project, f"image: {PYTHON_IMAGE}\n", f"image: {PIP_JOB_IMAGE}\n", "Job image with pip"
    )


def job_lines(project: Path, job: str) -> list[str]:
    """The shell lines a job runs, as the generated file states them."""
    document: dict[str, Any] = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    spec: dict[str, Any] = document[job]
    return [*spec.get("before_script", []), *spec["script"]]


def job_result(output: str, job: str) -> str | None:
    """PASS, FAIL or WARN from gitlab-ci-local's closing summary for a job."""
    match = re.search(rf"^\s*(PASS|FAIL|WARN)\s+{re.escape(job)}\b", output, re.MULTILINE)
    return match.group(1) if match else None


@dataclass
class PipelineRun:
    project: Path
    listed: subprocess.CompletedProcess[str]
    jobs: subprocess.CompletedProcess[str] | None = None


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    require_gitlab_ci_local()
    project = first_push(tmp_path_factory.mktemp("gitlab"))
    return PipelineRun(project, gitlab_ci_local(project, "--list"))


@pytest.fixture(scope="module")
def ran(pipeline: PipelineRun, tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """The test and dependency-audit jobs, run once side by side as one pipeline stage would."""
    require_docker()
    checkout = clone(pipeline.project, tmp_path_factory.mktemp("gitlab-run") / "my-service")
    use_job_image_with_pip(checkout)
    # CPU-heavy like an image build: shared, so the load test is not measured meanwhile.
    with machine_load(exclusive=False):
        jobs = gitlab_ci_local(checkout, "test", "dependency-audit", timeout=1200)
    return PipelineRun(checkout, pipeline.listed, jobs)


def test_gitlab_accepts_the_pipeline(pipeline: PipelineRun) -> None:
    output = output_of(pipeline.listed)
    assert pipeline.listed.returncode == 0, output
    assert "json schema validated" in output
    listed = {line.split()[0]: line.split()[1:] for line in pipeline.listed.stdout.splitlines()[1:]}
    assert set(listed) == {"test", "dependency-audit", "compose-smoke"}, output
    assert all(columns[:2] == ["test", "on_success"] for columns in listed.values()), output


def test_gitlab_rejects_a_job_named_like_a_global_keyword(
    pipeline: PipelineRun, tmp_path: Path
) -> None:
    """The check can fail: the smoke job's old name, `image`, is GitLab's default image."""
    checkout = clone(pipeline.project, tmp_path / "my-service")
    commit_edit(checkout, "\ncompose-smoke:\n", "\nimage:\n", "Smoke job named image")
    result = gitlab_ci_local(checkout, "--list")
    assert result.returncode != 0
    assert "Invalid .gitlab-ci.yml configuration" in output_of(result)
    assert "at default.image" in output_of(result)


@pytest.mark.docker
def test_test_job_passes_every_line_with_its_services(ran: PipelineRun) -> None:
    assert ran.jobs is not None
    output = output_of(ran.jobs)
    assert job_result(output, "test") == "PASS", output[-8000:]
    for service in ("redis:8", "postgres:17"):
        assert f"service image: {service} healthcheck passed" in output
    position = 0
    for line in job_lines(ran.project, "test"):
        found = output.find(f"test $ {line}\n", position)
        assert found >= 0, f"`{line}` did not run (in order) in the test job\n{output[-8000:]}"
        position = found
    # The service's own suite ran against the services, none of it skipped, and
    # GitLab's coverage regex found the total.
    summary = re.search(r"^test > =+ (\d+) passed in [^=]+=+$", output, re.MULTILINE)
    assert summary is not None, output[-8000:]
    assert re.search(r"^\s*PASS\s+test\s+\d+(\.\d+)?% coverage", output, re.MULTILINE)


@pytest.mark.docker
def test_dependency_audit_job_audits_the_locked_pins(ran: PipelineRun) -> None:
    assert ran.jobs is not None
    output = output_of(ran.jobs)
    lines = job_lines(ran.project, "dependency-audit")
    audit = next(line for line in lines if line.startswith("uvx pip-audit=="))
    for line in lines:
        assert f"dependency-audit $ {line}\n" in output, output[-8000:]
    if job_result(output, "dependency-audit") == "PASS":
        return
    # pip-audit asks PyPI's JSON API per release (/pypi/NAME/VERSION/json). Where
    # the index answers only per project, every pin "cannot be audited" and
    # --strict fails the job; any other failure is a real one.
    assert "Dependency not found on PyPI and could not be audited" in output, output[-8000:]
    version = audit.split()[1].removeprefix("pip-audit==")
    probe = f"https://pypi.org/pypi/pip-audit/{version}/json"
    status = httpx.get(probe, timeout=30).status_code
    assert status == 404, f"{probe} answers {status}, yet the audit failed:\n{output[-8000:]}"
    pytest.skip(
        f"the audit ran on the exported pins but cannot reach advisories here: {probe} "
        f"answers {status} (this index has no per-release JSON API), so --strict fails"
    )


@pytest.mark.docker
def test_compose_smoke_job(pipeline: PipelineRun) -> None:
    require_docker()
    missing = [
        image
        for image in DIND_IMAGES
        if subprocess.run(
            ["docker", "image", "inspect", image], capture_output=True, check=False
        ).returncode
        != 0
    ]
    if missing:
        pytest.skip(
            f"{' and '.join(missing)} are not on this engine and no registry serves them; "
            "docker-offline has no stand-in, and a Docker-in-Docker daemon could not pull "
            "the python and uv images `docker compose build` needs either"
        )
    result = gitlab_ci_local(pipeline.project, "--privileged", "compose-smoke", timeout=1200)
    assert job_result(output_of(result), "compose-smoke") == "PASS", output_of(result)[-8000:]


@pytest.mark.docker
def test_runner_reports_a_failing_script_line(pipeline: PipelineRun, tmp_path: Path) -> None:
    """The runs above can fail: a job whose first line exits non-zero fails the pipeline."""
    require_docker()
    checkout = clone(pipeline.project, tmp_path / "my-service")
    use_job_image_with_pip(checkout)
    # The first script: is the test job's.
    commit_edit(checkout, "  script:\n", '  script:\n    - "false"\n', "A line that fails", 1)
    result = gitlab_ci_local(checkout, "test", timeout=600)
    output = output_of(result)
    assert result.returncode != 0, output
    assert job_result(output, "test") == "FAIL", output
    assert "test $ uv sync --locked" not in output, "the job went on after a failing line"

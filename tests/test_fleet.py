"""The fleet: every generated service learns that its template moved, and takes it.

The scheduled jobs run here the way CI runs them (tests/github_runner.py), the
cruft part against a template repository in a temporary directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.github_runner import run_job, should_run
from tests.helpers import run
from tests.test_cruft import (
    ANSWERS,
    SLUG_DIR,
    commit_all,
    create_service,
    edit,
    git,
    template_repo,
)

UPDATE = Path(".github/workflows/template-update.yml")
CI = Path(".github/workflows/ci.yml")
# What the update job reads of the github context on a scheduled run.
GITHUB = {"token": "not-a-token", "event": {"repository": {"default_branch": "main"}}}

# Stands in for the GitHub CLI: records each call, and the body of a pull request.
FAKE_GH = """#!/bin/sh
printf '%s\\n' "$*" >> {calls}
while [ $# -gt 0 ]; do
  if [ "$1" = --body-file ]; then cp "$2" {calls}.body; fi
  shift
done
"""


def fake_gh(where: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`gh` on the job's PATH, writing what it was asked to where.calls."""
    where.mkdir()
    calls = where / "calls"
    gh = where / "gh"
    gh.write_text(FAKE_GH.format(calls=shlex.quote(str(calls))))
    gh.chmod(gh.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{where}:{os.environ['PATH']}")
    return calls


@pytest.mark.xdist_group("cruft")
def test_the_update_job_proposes_the_template_update_with_every_conflict_listed(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    record_property: Callable[[str, object], None],
) -> None:
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services")
    calls = fake_gh(tmp_path / "bin", monkeypatch)

    # Up to date: the job says so and proposes nothing.
    quiet = run_job(
        service, service / UPDATE, "propose", tmp_path / "runner-0", event="schedule", github=GITHUB
    )
    assert quiet.failed == [], quiet.report()
    assert "Up to date with the template." in quiet.step("Open the pull request").output
    assert not calls.exists()

    # The service changed its quick start and its Dockerfile; the template changed the
    # same quick start line, removed the Dockerfile, and added a runbook.
    quick_start = "docker compose up --build\n"
    edit(service / "README.md", lambda t: t.replace(quick_start, "docker compose up -d\n", 1))
    edit(service / "Dockerfile", lambda t: t + "# ours: a label the platform reads\n")
    commit_all(service, "Own quick start and Dockerfile label")
    generated = template / SLUG_DIR
    edit(
        generated / "README.md",
        lambda t: t.replace(quick_start, "docker compose up --build --wait\n", 1),
    )
    (generated / "docs").mkdir()
    (generated / "docs" / "runbook.md").write_text("# Runbook\n")
    git(template, "rm", "--quiet", f"{SLUG_DIR}/Dockerfile")
    edit(
        template / "removals.toml",
        lambda t: t + '\n[[removed]]\npath = "Dockerfile"\nrelease = "1.1.0"\n',
    )
    # And a new option, which the service has no answer for.
    edit(
        template / "cookiecutter.json",
        lambda t: t.replace("{\n", '{\n  "review_team": "platform",\n', 1),
    )
    commit_b = commit_all(template, "template B")

    job = run_job(
        service,
        service / UPDATE,
        "propose",
        tmp_path / "runner-1",
        event="schedule",
        github=GITHUB,
    )
    assert job.failed == [], job.report()
    branch = f"template-update/{commit_b[:12]}"
    assert git(service, "branch", "--list", branch).stdout.strip() == branch
    files = git(service, "ls-tree", "-r", "--name-only", branch).stdout.split()
    assert not [f for f in files if f.endswith(".rej")], "a .rej file was committed"
    assert "docs/runbook.md" in files, "the clean part of the update is missing"
    state = json.loads(git(service, "show", f"{branch}:.cruft.json").stdout)
    assert state["commit"] == commit_b

    # The pull request: a draft, with the conflicts in its title and description.
    asked = calls.read_text().splitlines()
    assert asked[0] == "auth setup-git"
    create = asked[-1]
    assert create.startswith("pr create --draft --base main --head " + branch), create
    assert re.search(r"--title Template update to \w+ \(2 to resolve\)", create), create
    body = Path(f"{calls}.body").read_text()
    # The README hunk git could not place is in the description, since its .rej is gone.
    assert "`README.md`: these hunks did not apply" in body
    assert "+docker compose up --build --wait" in body
    assert "- Dockerfile: removed by the template in 1.1.0" in body
    assert "## New options, answered with the template's defaults" in body
    assert '- `review_team`: `"platform"`' in body
    assert state["context"]["cookiecutter"]["review_team"] == "platform"
    assert git(service, "show", f"{branch}:README.md").stdout.count("docker compose up -d") == 1
    assert "# ours: a label" in git(service, "show", f"{branch}:Dockerfile").stdout
    message = git(service, "log", "-1", "--format=%B", branch).stdout
    assert message.startswith(f"Template update to {commit_b[:12]}\n\n")
    assert "these hunks did not apply" in message

    # Next week, the same template commit: proposed already, nothing pushed twice.
    again = run_job(
        service,
        service / UPDATE,
        "propose",
        tmp_path / "runner-2",
        event="schedule",
        github=GITHUB,
    )
    assert again.failed == [], again.report()
    assert f"{branch} is proposed already." in again.step("Open the pull request").output
    assert len(calls.read_text().splitlines()) == len(asked) + 1  # auth setup-git only
    record_property("figure", f"update job: {sum(1 for _ in job.steps)} steps")


def test_the_weekly_ci_run_tests_the_newest_dependencies_without_committing(
    tmp_path: Path,
) -> None:
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services")
    workflow = yaml.safe_load((service / CI).read_text())
    assert workflow[True]["schedule"], "ci.yml has no schedule"  # YAML 1.1 reads `on` as True
    lock = (service / "uv.lock").read_text()
    job = run_job(service, service / CI, "test", tmp_path / "runner", event="schedule")
    assert job.failed == [], job.report()
    upgrade = job.step("Newest dependencies")
    assert not upgrade.skipped and upgrade.returncode == 0
    assert "uv lock --upgrade" in upgrade.command
    # The lock the suite ran with is the upgraded one, and nothing was committed.
    workspace = tmp_path / "runner" / "workspace"
    assert git(workspace, "status", "--porcelain").stdout.split() in ([], ["M", "uv.lock"])
    assert (service / "uv.lock").read_text() == lock
    # On a push or a pull request the step is skipped: the locked versions are tested
    # (tests/test_ci_github.py runs those).
    [step] = [s for s in workflow["jobs"]["test"]["steps"] if "Newest" in str(s.get("name"))]
    for event in ("push", "pull_request"):
        assert not should_run(step["if"], False, {"github": {"event_name": event}})


# A pre-receive hook for the stand-in of GitLab's repository: records the push options
# (GitLab reads merge_request.* from them) and accepts the push.
RECORD_PUSH_OPTIONS = """#!/bin/sh
i=0
while [ "$i" -lt "${GIT_PUSH_OPTION_COUNT:-0}" ]; do
  eval "printf '%s\\n' \\"\\$GIT_PUSH_OPTION_$i\\"" >> OPTIONS_FILE
  i=$((i + 1))
done
"""


@pytest.mark.xdist_group("cruft")
def test_the_gitlab_update_job_pushes_a_merge_request(tmp_path: Path) -> None:
    """The job's script lines, run in a checkout as GitLab's shell runs them (its
    before_script only installs git and uv, which this machine has)."""
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services", {**ANSWERS, "ci": "gitlab"})
    job = yaml.safe_load((service / ".gitlab-ci.yml").read_text())["template-update"]
    assert job["rules"] == [{"if": '$CI_PIPELINE_SOURCE == "schedule"'}]
    edit(template / SLUG_DIR / ".gitignore", lambda t: t + "\n# Local logs\n*.log\n")
    commit_b = commit_all(template, "template B")

    # GitLab's repository: a bare one that takes push options and records them, reached
    # through the URL the job builds (git's insteadOf maps it here).
    remote = tmp_path / "gitlab.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(service), str(remote))
    git(remote, "config", "receive.advertisePushOptions", "true")
    options = tmp_path / "push-options"
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(RECORD_PUSH_OPTIONS.replace("OPTIONS_FILE", shlex.quote(str(options))))
    hook.chmod(0o755)
    url = "https://template-update:glpat-test@gitlab.example.com:443/acme/my-service.git"
    config = tmp_path / "gitconfig"
    config.write_text(f'[url "{remote}"]\n\tinsteadOf = {url}\n')
    checkout = tmp_path / "job"
    git(tmp_path, "clone", "--quiet", str(service), str(checkout))
    env = {
        "CI_SERVER_PROTOCOL": "https",
        "CI_SERVER_HOST": "gitlab.example.com",
        "CI_SERVER_PORT": "443",
        "CI_PROJECT_PATH": "acme/my-service",
        "CI_DEFAULT_BRANCH": "main",
        "TEMPLATE_UPDATE_TOKEN": "glpat-test",
        "GIT_CONFIG_GLOBAL": str(config),
    }
    script = tmp_path / "script.sh"
    script.write_text("\n".join(job["script"]) + "\n")
    result = run(["sh", "-e", str(script)], checkout, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    branch = f"template-update/{commit_b[:12]}"
    assert git(remote, "branch", "--list", branch).stdout.strip() == branch
    assert "*.log" in git(remote, "show", f"{branch}:.gitignore").stdout
    assert options.read_text().splitlines() == [
        "merge_request.create",
        "merge_request.target=main",
        f"merge_request.title=Template update to {commit_b[:12]}",
        "merge_request.description=The commit message lists every conflict and the steps "
        "before merging.",
    ]
    message = git(remote, "log", "-1", "--format=%B", branch).stdout
    assert "No conflicts: every change of the template applied cleanly." in message
    assert (checkout / "template-update.patch").is_file()  # the artifact, never committed
    assert "template-update.patch" not in git(remote, "ls-tree", "-r", "--name-only", branch).stdout

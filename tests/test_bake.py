"""Bake every option value and hold each result to the generated project's own bar."""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from hooks.post_gen_project import MANIFEST
from tests.helpers import VARIANTS, bake, context_of, require_compose_cli, run

# Words that must not survive anywhere in a project that did not choose the option.
FORBIDDEN_WHEN_OFF: dict[str, re.Pattern[str]] = {
    "use_redis": re.compile(r"redis", re.IGNORECASE),
    "use_postgres": re.compile(r"postgres|sqlalchemy|alembic|asyncpg|migrat", re.IGNORECASE),
    "include_example_api": re.compile(r"(?<!\.)\bitems?\b|models\.py", re.IGNORECASE),
}
FORBIDDEN_FOR_SERVER = {"uvicorn": re.compile(r"gunicorn", re.IGNORECASE)}
# GitHub expressions (${{ ... }}) are the one legitimate double brace.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|\{#|cookiecutter", re.IGNORECASE)

_BAKED: dict[str, Path] = {}


def variant_params() -> list[Any]:
    return [pytest.param(name, id=name, marks=pytest.mark.xdist_group(name)) for name in VARIANTS]


@pytest.fixture
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    name: str = request.param
    if name not in _BAKED:
        _BAKED[name] = bake(tmp_path_factory.mktemp(name), **VARIANTS[name])
    return name


def project_files(project: Path) -> list[Path]:
    skip = {".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}
    return [
        path
        for path in project.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(project).parts)
    ]


def tool_prefix(project: Path, python_version: str) -> list[str]:
    """Install the project's locked dev environment; return how to run its tools.

    When this machine has no interpreter of the chosen version (3.14 here), the
    locked requirements go into a venv of the Python running these tests, and
    mypy and ruff still check against the chosen version from pyproject.toml.
    """
    found = run(["uv", "python", "find", python_version], project, check=False)
    if found.returncode == 0:
        run(["uv", "sync", "--locked"], project)
        return ["uv", "run", "--locked"]
    export = run(
        ["uv", "export", "--locked", "--no-hashes", "--all-groups", "--no-emit-project"], project
    )
    requirements = project.parent / "requirements-check.txt"
    requirements.write_text(export.stdout)
    venv = project.parent / "venv-check"
    run(["uv", "venv", "--python", sys.executable, str(venv)], project)
    env = {"VIRTUAL_ENV": str(venv)}
    run(["uv", "pip", "install", "-r", str(requirements), "-e", "."], project, env=env)
    return [str(venv / "bin" / "python"), "-m"]


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_no_template_syntax_is_left(variant: str) -> None:
    project = _BAKED[variant]
    offenders = [
        str(path.relative_to(project))
        for path in project_files(project)
        if LEFTOVER_JINJA.search(str(path.relative_to(project)))
        or LEFTOVER_JINJA.search(path.read_text(errors="replace"))
    ]
    assert offenders == []


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_unchosen_options_are_pruned_without_trace(variant: str) -> None:
    project = _BAKED[variant]
    context = context_of(**VARIANTS[variant])
    package = context["package_name"]
    for (option, value), paths in MANIFEST.items():
        for path in paths:
            exists = (project / path.format(package=package)).exists()
            owned_by_chosen = any(context[o] == v and path in p for (o, v), p in MANIFEST.items())
            assert exists == owned_by_chosen, f"{path} ({option}={value!r})"
    patterns = [p for option, p in FORBIDDEN_WHEN_OFF.items() if not context[option]]
    if context["server"] in FORBIDDEN_FOR_SERVER:
        patterns.append(FORBIDDEN_FOR_SERVER[context["server"]])
    for file in project_files(project):
        if file.name in {"LICENSE", ".env"}:
            continue
        text = file.read_text(errors="replace")
        for pattern in patterns:
            match = pattern.search(text)
            assert match is None, f"{file.relative_to(project)} mentions {match.group(0)!r}"


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_compose_services_match_the_options(variant: str) -> None:
    project = _BAKED[variant]
    context = context_of(**VARIANTS[variant])
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    expected = {"app"}
    if context["use_postgres"]:
        expected |= {"db", "migrate"}
        assert compose["services"]["db"]["image"] == f"postgres:{context['postgres_version']}"
        volume = compose["services"]["db"]["volumes"][0]
        pgdata = (
            "/var/lib/postgresql"
            if int(context["postgres_version"]) >= 18
            else ("/var/lib/postgresql/data")
        )
        assert volume == f"pgdata:{pgdata}"
    if context["use_redis"]:
        expected.add("redis")
        assert compose["services"]["redis"]["image"] == f"redis:{context['redis_version']}"
    assert set(compose["services"]) == expected


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_structured_files_parse(variant: str) -> None:
    project = _BAKED[variant]
    context = context_of(**VARIANTS[variant])
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={context['python_version']}"
    for path in project_files(project):
        if path.suffix in {".yml", ".yaml"}:
            assert isinstance(yaml.safe_load(path.read_text()), dict), path


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_env_has_secrets_and_is_ignored(variant: str) -> None:
    project = _BAKED[variant]
    values = [
        line.partition("=")[2]
        for line in (project / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert not [value for value in values if "change-me" in value]
    assert ".env" in (project / ".gitignore").read_text().split()
    assert ".env" in (project / ".dockerignore").read_text().split()


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_lock_matches_pyproject(variant: str) -> None:
    run(["uv", "lock", "--check"], _BAKED[variant])


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_ruff_mypy_pass(variant: str) -> None:
    project = _BAKED[variant]
    prefix = tool_prefix(project, context_of(**VARIANTS[variant])["python_version"])
    run([*prefix, "ruff", "check", "."], project)
    run([*prefix, "ruff", "format", "--check", "."], project)
    run([*prefix, "mypy"], project)


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_hadolint_has_no_findings(variant: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    run([hadolint, "--failure-threshold", "style", "Dockerfile"], _BAKED[variant])


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_compose_config_is_valid(variant: str) -> None:
    require_compose_cli()
    project = _BAKED[variant]
    run(["docker", "compose", "config", "-q"], project)
    run(
        ["docker", "compose", "-f", "compose.yaml", "-f", "compose.dev.yaml", "config", "-q"],
        project,
    )

"""Bake every option value and hold each result to the generated project's own bar."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import Marker

from hooks.post_gen_project import MANIFEST
from tests.helpers import (
    TEMPLATE_DIR,
    VARIANTS,
    bake,
    context_of,
    machine_load,
    require_compose_cli,
    require_docker,
    run,
)

# Words that must not survive anywhere in a project that did not choose the option.
FORBIDDEN_WHEN_OFF: dict[str, re.Pattern[str]] = {
    "use_redis": re.compile(r"redis", re.IGNORECASE),
    "use_postgres": re.compile(r"postgres|sqlalchemy|alembic|asyncpg|migrat", re.IGNORECASE),
    "include_example_api": re.compile(r"(?<!\.)\bitems?\b|models\.py", re.IGNORECASE),
    "use_metrics": re.compile(r"prometheus|metrics", re.IGNORECASE),
    # FastAPI itself depends on opentelemetry-api: only the SDK side is ours.
    "use_tracing": re.compile(
        r"opentelemetry[-_.](sdk|exporter|instrumentation)|from opentelemetry|\botel_|tracing"
        r"|trace_id|span_id",
        re.IGNORECASE,
    ),
    # pyrate-limiter is a dependency of Schemathesis.
    "use_rate_limit": re.compile(r"(?<!py)rate[ _-]?limit|\blimits\b[<>=]", re.IGNORECASE),
    "use_kubernetes": re.compile(r"kustomiz|kubectl|deploy/kubernetes", re.IGNORECASE),
    # "worker" alone names the web server's processes too.
    "use_worker": re.compile(
        r"taskiq|\bjobs\.py|dead.letter|processed_at|(?-i:\bWORKER_|\.worker\b)|background job"
        r"|periodic|\bjobs_\w+|_worker\.py",
        re.IGNORECASE,
    ),
    # The Dockerfile's dev stage exists only for the dev container.
    "use_devcontainer": re.compile(r"devcontainer|dev container|(?-i:\bAS dev\b)", re.IGNORECASE),
}
FORBIDDEN_FOR_SERVER = {"uvicorn": re.compile(r"gunicorn", re.IGNORECASE)}
FORBIDDEN_FOR_AUTH = {
    "none": re.compile(
        r"joserfc|jwks|bearer|openid-configuration|\bAUTH_[A-Z]|\bauth\.py"
        # GitLab's "project access token" (the update schedule) is no caller's token.
        r"|(?<!project )access.token"
        r"|www-authenticate",
        re.IGNORECASE,
    )
}
# GitHub expressions (${{ ... }}) are the one legitimate double brace.
LEFTOVER_JINJA = re.compile(r"(?<!\$)\{\{|\{%|\{#|cookiecutter", re.IGNORECASE)

_BAKED: dict[str, Path] = {}


def variant_params(python_image: bool = False) -> list[Any]:
    """One param per variant. `python_image`: the test runs the project's tooling in a
    python image when this machine lacks the chosen Python, so such a variant is
    marked `docker` too (`-m "not docker"` must select no test that needs an engine)."""
    params = []
    for name in VARIANTS:
        marks = [pytest.mark.xdist_group(name)]
        version = context_of(**VARIANTS[name])["python_version"]
        if python_image and not host_finds_python(version):
            marks.append(pytest.mark.docker)
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def host_finds_python(version: str) -> bool:
    found = subprocess.run(
        ["uv", "python", "find", "--no-project", version], capture_output=True, check=False
    )
    return found.returncode == 0


@pytest.fixture
def variant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    name: str = request.param
    if name not in _BAKED:
        _BAKED[name] = bake(tmp_path_factory.mktemp(name), **VARIANTS[name])
    return name


def project_files(project: Path) -> list[Path]:
    skip = {".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}
    # cruft's record of the template and every answer, off ones included, by design.
    skip.add(".cruft.json")
    return [
        path
        for path in project.rglob("*")
        if path.is_file() and not skip.intersection(path.relative_to(project).parts)
    ]


def host_has_python(project: Path, python_version: str) -> bool:
    return run(["uv", "python", "find", python_version], project, check=False).returncode == 0


def run_in_python_image(project: Path, python_version: str, script: str) -> None:
    """Run a shell script in the project inside python:<version>-slim-trixie.

    For a chosen Python this machine lacks (3.14 here, where uv cannot download
    interpreters): .ci/python-standin provides the image, the host's uv is
    mounted in, and the project's own tooling runs on the real interpreter.
    """
    require_docker()
    uv = shutil.which("uv")
    assert uv is not None
    image = f"python:{python_version}-slim-trixie"
    with machine_load(exclusive=False):
        run(["bash", str(TEMPLATE_DIR / ".ci" / "python-standin"), python_version], project)
        run(
            [
                "docker", "run", "--rm",
                "--volume", f"{project}:/project", "--workdir", "/project",
                "--volume", f"{uv}:/usr/local/bin/uv:ro",
                "--env", "UV_PYTHON_DOWNLOADS=never",
                "--env", "UV_PROJECT_ENVIRONMENT=/tmp/venv",
                image, "sh", "-ec", script,
            ],
            project,
        )  # fmt: skip


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
            # A path listed under several values exists only when all of them were chosen.
            owners = [(o, v) for (o, v), p in MANIFEST.items() if path in p]
            assert exists == all(context[o] == v for o, v in owners), f"{path} ({option}={value!r})"
    patterns = [p for option, p in FORBIDDEN_WHEN_OFF.items() if not context[option]]
    if context["server"] in FORBIDDEN_FOR_SERVER:
        patterns.append(FORBIDDEN_FOR_SERVER[context["server"]])
    if context["auth"] in FORBIDDEN_FOR_AUTH:
        patterns.append(FORBIDDEN_FOR_AUTH[context["auth"]])
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
    if context["use_worker"]:
        expected.add("worker")
        assert compose["services"]["worker"]["command"][-1].endswith(".worker")
        assert compose["services"]["worker"]["read_only"] is True
    if context["auth"] == "oidc":
        expected.add("issuer")
        assert compose["services"]["issuer"]["profiles"] == ["dev-issuer"]
    assert set(compose["services"]) == expected


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_structured_files_parse(variant: str) -> None:
    project = _BAKED[variant]
    context = context_of(**VARIANTS[variant])
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["requires-python"] == f">={context['python_version']}"
    for path in project_files(project):
        if path.suffix in {".yml", ".yaml"}:
            # Kubernetes manifests may hold several documents.
            documents = list(yaml.safe_load_all(path.read_text()))
            assert documents and all(isinstance(d, dict) for d in documents), path


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


@pytest.mark.parametrize("variant", variant_params(python_image=True), indirect=True)
def test_lock_matches_pyproject(variant: str) -> None:
    project = _BAKED[variant]
    python_version = context_of(**VARIANTS[variant])["python_version"]
    if host_has_python(project, python_version):
        run(["uv", "lock", "--check"], project)
    else:
        # The hook could not lock without the interpreter and said so; do what
        # its message says, on the real interpreter, then check the result.
        run_in_python_image(project, python_version, "uv lock && uv lock --check")


def packages_installed_on(lock: dict[str, Any], python_version: str) -> set[str]:
    """The locked packages that some dependency edge installs on this Python: an edge
    can be for other Pythons only (libcst needs pyyaml-ft, cp313 wheels only, on 3.13)."""
    python = {"python_version": python_version, "python_full_version": f"{python_version}.0"}
    installed = set()
    for package in lock["package"]:
        edges = [
            *package.get("dependencies", []),
            *(edge for group in package.get("dev-dependencies", {}).values() for edge in group),
            *(e for extra in package.get("optional-dependencies", {}).values() for e in extra),
        ]
        for edge in edges:
            if "marker" not in edge or Marker(edge["marker"]).evaluate(python):
                installed.add(edge["name"])
    return installed


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_the_lock_has_wheels_for_the_chosen_python(variant: str) -> None:
    """Every compiled package installs from a wheel, so `uv sync` and the image build need
    no compiler (python:*-slim has none) and no Rust toolchain (pydantic-core)."""
    project = _BAKED[variant]
    python_version = context_of(**VARIANTS[variant])["python_version"]
    lock = tomllib.loads((project / "uv.lock").read_text())
    if lock["requires-python"] != f">={python_version}":
        # The hook could not re-lock here: the lock then differs from pyproject.toml,
        # so `uv sync --locked` refuses it (and says to run `uv lock`) instead of
        # building from source. A lock that claims the chosen Python must hold its
        # wheels, whether or not this machine has that interpreter.
        assert not host_has_python(project, python_version), "the hook did not re-lock"
        return
    tag = "cp" + python_version.replace(".", "")
    installed = packages_installed_on(lock, python_version)
    missing = []
    for package in lock["package"]:
        # name-version-python-abi-platform.whl: an ABI such as cp313 ties a wheel
        # to one Python (abi3 and none do not).
        abis = [Path(w["url"]).name.split("-")[-2] for w in package.get("wheels", [])]
        portable = {"abi3", "none"} & set(abis)
        compiled = any(abi.startswith("cp") for abi in abis)
        if compiled and not portable and tag not in abis and package["name"] in installed:
            missing.append(package["name"])
    assert missing == [], f"no {tag} wheel in uv.lock for {missing}"


@pytest.mark.parametrize("variant", variant_params(python_image=True), indirect=True)
def test_ruff_mypy_pass(variant: str) -> None:
    project = _BAKED[variant]
    python_version = context_of(**VARIANTS[variant])["python_version"]
    checks = ["ruff check .", "ruff format --check .", "mypy"]
    if host_has_python(project, python_version):
        run(["uv", "sync", "--locked"], project)
        if context_of(**VARIANTS[variant])["use_postgres"]:
            # A revision made the documented way must pass the same checks.
            run(["uv", "run", "--locked", "alembic", "revision", "-m", "add orders"], project)
        for check in checks:
            run(["uv", "run", "--locked", *check.split()], project)
    else:
        script = " && ".join(
            ["uv lock", "uv sync --locked", *(f"uv run --locked {check}" for check in checks)]
        )
        run_in_python_image(project, python_version, script)


def test_default_bake_without_uv_ships_a_matching_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # No uv on PATH: the hook cannot lock, so the lock that ships must already fit.
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent.parent / "nonexistent"))
    project = bake(tmp_path)
    monkeypatch.undo()
    assert "uv lock " in capfd.readouterr().out
    run(["uv", "lock", "--check"], project)


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_hadolint_has_no_findings(variant: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    project = _BAKED[variant]
    dockerfiles = ["Dockerfile", *(["dev-issuer/Dockerfile"] * (project / "dev-issuer").exists())]
    for dockerfile in dockerfiles:
        run([hadolint, "--failure-threshold", "style", dockerfile], project)


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_compose_config_is_valid(variant: str) -> None:
    require_compose_cli()
    project = _BAKED[variant]
    run(["docker", "compose", "config", "-q"], project)
    if context_of(**VARIANTS[variant])["use_postgres"]:
        rendered = run(["docker", "compose", "config", "--format", "json"], project).stdout
        services = json.loads(rendered)["services"]
        # Migrations go straight to db, whatever DATABASE_URL (or .env's host-side
        # MIGRATION_DATABASE_URL) says; the app does not get that URL.
        migration_url = services["migrate"]["environment"]["MIGRATION_DATABASE_URL"]
        assert re.fullmatch(r"postgresql\+asyncpg://app:[^@]+@db:5432/app", migration_url)
        assert not services["app"]["environment"].get("MIGRATION_DATABASE_URL")
    run(
        ["docker", "compose", "-f", "compose.yaml", "-f", "compose.dev.yaml", "config", "-q"],
        project,
    )


def test_the_dev_server_listens_on_the_port_compose_publishes(tmp_path: Path) -> None:
    """compose.yaml publishes $PORT and the HEALTHCHECK asks it: the dev override too."""
    require_compose_cli()
    project = bake(tmp_path)
    files = ["-f", "compose.yaml", "-f", "compose.dev.yaml"]
    config = run(
        ["docker", "compose", *files, "config", "--format", "json"], project, env={"PORT": "9123"}
    )
    app = json.loads(config.stdout)["services"]["app"]
    command = app["command"]
    assert command[command.index("--port") + 1] == "9123"
    assert [port["target"] for port in app["ports"]] == [9123]


def shutdown_timeouts(project: Path) -> dict[str, float]:
    """The settings' defaults that order a shutdown, read from the generated files."""
    example = (project / ".env.example").read_text()
    defaults = dict(re.findall(r"^([A-Z_]+)=(.*)$", example, re.MULTILINE))
    package = next((project / "src").iterdir())
    settings = (package / "settings.py").read_text()
    share = re.search(r"^REQUEST_SHARE_OF_GRACE = ([\d.]+)$", settings, re.MULTILINE)
    assert share is not None
    graceful = float(defaults["GRACEFUL_TIMEOUT_SECONDS"])
    timeouts = {"graceful": graceful, "requests": float(int(graceful * float(share[1])))}
    if "DATABASE_STATEMENT_TIMEOUT_SECONDS" in defaults:
        db = (package / "db.py").read_text()
        client = re.search(r"^CLIENT_TIMEOUT_GRACE_SECONDS = ([\d.]+)$", db, re.MULTILINE)
        assert client is not None
        statement = float(defaults["DATABASE_STATEMENT_TIMEOUT_SECONDS"])
        # The longest a statement holds a request: the server's timeout, then the client's.
        timeouts["statement"] = statement + float(client[1])
    return timeouts


@pytest.mark.parametrize("variant", variant_params(), indirect=True)
def test_shutdown_timeouts_are_ordered(variant: str) -> None:
    """statement < the requests' grace < the server's graceful timeout < Docker's SIGKILL:
    a request in flight at SIGTERM gets its answer, then the lifespan's shutdown runs."""
    project = _BAKED[variant]
    timeouts = shutdown_timeouts(project)
    # Both servers take their timeouts from the settings.
    if context_of(**VARIANTS[variant])["server"] == "gunicorn":
        config = (project / "gunicorn.conf.py").read_text()
        assert "\ngraceful_timeout = _settings.graceful_timeout_seconds\n" in config
        assert re.search(r'^worker_class = "\w+\.gunicorn_server\.Worker"$', config, re.M)
        server = next((project / "src").glob("*/gunicorn_server.py")).read_text()
        assert "self.config.timeout_graceful_shutdown = grace" in server
    else:
        server = next((project / "src").glob("*/uvicorn_server.py")).read_text()
        assert "timeout_graceful_shutdown=settings.request_grace_seconds," in server
    if "statement" in timeouts:
        assert timeouts["statement"] < timeouts["requests"]
    assert timeouts["requests"] < timeouts["graceful"]
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    stop = re.fullmatch(r"(\d+)s", compose["services"]["app"]["stop_grace_period"])
    assert stop is not None
    assert timeouts["graceful"] < float(stop[1]) <= timeouts["graceful"] + 10

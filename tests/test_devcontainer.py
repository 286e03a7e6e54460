"""The dev container (use_devcontainer): its files agree with the service's, and it opens.

The docker test does what a new teammate's editor does, with the Dev Containers
CLI from npm (.ci/run installs it): a fresh clone (no .env), `devcontainer up`,
then the generated tests inside it against the compose services.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hooks.post_gen_project import PLACEHOLDER_VALUE, URL_PASSWORDS
from tests.helpers import (
    IN_CI,
    TEMPLATE_DIR,
    bake,
    context_of,
    machine_load,
    require_compose_cli,
    require_docker,
    run,
)

DEVCONTAINER_CLI_VERSION = "0.89.0"
DEVCONTAINER_CLI = TEMPLATE_DIR / ".ci" / ".tools" / "node_modules" / "@devcontainers" / "cli"
# Every shape of backing services the dev container can start with.
SHAPES: dict[str, dict[str, Any]] = {
    "default": {},
    "no-redis": {"use_redis": False, "use_rate_limit": False},
    "no-postgres": {"use_postgres": False, "include_example_api": False},
    "no-services": {
        "use_postgres": False,
        "use_redis": False,
        "use_rate_limit": False,
        "include_example_api": False,
        "auth": "none",
    },
}
# The uid of a developer's first account, and of the image's dev user.
DEVELOPER_UID = 1000


def load_jsonc(path: Path) -> dict[str, Any]:
    """devcontainer.json with its comments: whole-line `//` comments only (json fails on others)."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("//")]
    config: dict[str, Any] = json.loads("\n".join(lines))
    return config


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        name: bake(tmp_path_factory.mktemp(name), **answers) for name, answers in SHAPES.items()
    }


def env_values(text: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.MULTILINE))


@pytest.mark.xdist_group("devcontainer-shapes")
@pytest.mark.parametrize("shape", SHAPES)
def test_initialize_makes_a_fresh_clones_env_like_the_generator(
    shape: str, shapes: dict[str, Path], tmp_path: Path
) -> None:
    """initializeCommand: a clone has no .env; the script makes one with the hook's guarantees."""
    clone = tmp_path / "clone"
    shutil.copytree(shapes[shape], clone, ignore=shutil.ignore_patterns(".env", ".venv"))
    run(["sh", ".devcontainer/initialize.sh"], clone)
    env = clone / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    example = (clone / ".env.example").read_text().splitlines()
    made = env.read_text().splitlines()
    assert len(made) == len(example)
    values = env_values(env.read_text())
    secrets = {}
    for before, after in zip(example, made, strict=True):
        if PLACEHOLDER_VALUE not in before or before.startswith("#"):
            assert after == before
            continue
        key, _, value = after.partition("=")
        assert PLACEHOLDER_VALUE not in value, key
        if key in URL_PASSWORDS:
            # The URL carries the password of its variable, as the hook writes it.
            assert f":{values[URL_PASSWORDS[key]]}@" in value, key
        else:
            assert len(value) >= 32, key
            secrets[key] = value
    context = context_of(**SHAPES[shape])
    expected = {"POSTGRES_PASSWORD"} if context["use_postgres"] else set()
    expected |= {"REDIS_PASSWORD"} if context["use_redis"] else set()
    assert set(secrets) == expected
    assert len(set(secrets.values())) == len(secrets), "each secret is drawn on its own"
    # Never replaced: its passwords may already be in a database volume.
    run(["sh", ".devcontainer/initialize.sh"], clone)
    assert env.read_text().splitlines() == made


@pytest.mark.xdist_group("devcontainer-shapes")
@pytest.mark.parametrize("shape", SHAPES)
def test_the_configuration_matches_the_compose_files_and_the_image(
    shape: str, shapes: dict[str, Path]
) -> None:
    require_compose_cli()
    project = shapes[shape]
    context = context_of(**SHAPES[shape])
    config = load_jsonc(project / ".devcontainer" / "devcontainer.json")
    files = [arg for name in config["dockerComposeFile"] for arg in ("-f", f".devcontainer/{name}")]
    merged = json.loads(
        run(["docker", "compose", *files, "config", "--format", "json"], project).stdout
    )
    services = merged["services"]
    dev = services[config["service"]]
    backing = [
        name for name, chosen in (("db", "use_postgres"), ("redis", "use_redis")) if context[chosen]
    ]
    # The dev issuer too with auth=oidc: the app run inside `dev` fetches its keys, and
    # the README's token command asks it.
    issuer = ["issuer"] if context["auth"] == "oidc" else []
    assert config["runServices"] == [config["service"], *backing, *issuer]
    assert sorted(dev.get("depends_on", {})) == backing
    # The service URLs are compose.yaml's app's, letter for letter.
    for name in ("DATABASE_URL", "REDIS_URL"):
        assert dev["environment"].get(name) == services["app"].get("environment", {}).get(name)
    # The source is mounted where the editor opens it; the caches in a named volume.
    mounts = {volume["target"]: volume for volume in dev["volumes"]}
    workspace = mounts[config["workspaceFolder"]]
    assert (workspace["type"], Path(workspace["source"])) == ("bind", project.resolve())
    interpreter = config["customizations"]["vscode"]["settings"]["python.defaultInterpreterPath"]
    cache = next(m for m in mounts.values() if m["type"] == "volume")
    assert Path(interpreter).is_relative_to(cache["target"])
    # The image: the Dockerfile's dev stage, whose environment is the one the editor uses.
    assert dev["build"]["target"] == "dev"
    dockerfile = (project / "Dockerfile").read_text()
    stage = dockerfile.split(" AS dev\n")[1].split("\nFROM ")[0]
    assert f"UV_PROJECT_ENVIRONMENT={Path(interpreter).parent.parent}" in stage
    assert f"\nUSER {config['remoteUser']}\n" in stage
    assert dockerfile.rstrip().splitlines()[-1].startswith("CMD "), "runtime stays the last stage"
    # The port the app listens on inside, forwarded to the editor's machine.
    port = int(env_values((project / ".env.example").read_text())["PORT"])
    assert config["forwardPorts"] == [port]
    assert "features" not in config, "features are downloaded from a registry at build time"


def require_devcontainer_cli() -> Path:
    """The CLI's own directory (.ci/run installs the npm package); node runs it."""
    if shutil.which("node") is not None and (DEVCONTAINER_CLI / "package.json").exists():
        return DEVCONTAINER_CLI
    install = f"npm install --prefix .ci/.tools @devcontainers/cli@{DEVCONTAINER_CLI_VERSION}"
    message = f"the Dev Containers CLI is not installed: {install}"
    if IN_CI:
        pytest.fail(f"{message} (.ci/run installs it)", pytrace=False)
    pytest.skip(message)


@pytest.fixture
def developer_dir() -> Iterator[Path]:
    """A directory every user can enter: the CLI runs as a developer, not as root."""
    path = Path(tempfile.mkdtemp(prefix="devcontainer-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_developer(workdir: Path) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment that run the CLI as a non-root developer.

    As root (CI), as uid 1000 in the group that owns Docker's socket: the CLI then
    makes .env and runs the container as a developer would, with the uid mapping
    (updateRemoteUserUID) of a real laptop. Otherwise as the user running the suite.
    """
    home = workdir / "home"
    home.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(workdir / "tmp")}
    (workdir / "tmp").mkdir()
    if os.getuid() != 0:
        return [], env
    # The compose plugin of the user running the suite, which may sit in root's
    # home (as .ci/run's engine installs it): the developer gets a copy.
    info = run(["docker", "info", "--format", "{{json .ClientInfo.Plugins}}"], workdir)
    plugins = {plugin["Name"]: plugin["Path"] for plugin in json.loads(info.stdout)}
    cli_plugins = home / ".docker" / "cli-plugins"
    cli_plugins.mkdir(parents=True)
    shutil.copy2(plugins["compose"], cli_plugins / "docker-compose")
    for path in (home, home / ".docker", cli_plugins, workdir / "tmp"):
        os.chown(path, DEVELOPER_UID, DEVELOPER_UID)
    socket = Path(
        os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    )
    group = socket.stat().st_gid
    prefix = ["setpriv", f"--reuid={DEVELOPER_UID}", f"--regid={DEVELOPER_UID}"]
    return [*prefix, f"--groups={group}", "--"], env


@pytest.mark.docker
def test_devcontainer_up_runs_the_services_tests_inside(
    developer_dir: Path, record_property: Callable[[str, object], None]
) -> None:
    require_docker()
    cli = shutil.copytree(require_devcontainer_cli(), developer_dir / "cli")
    node = shutil.which("node")
    assert node is not None
    baked = bake(developer_dir / "bake", project_name="Devcontainer Check")
    # A fresh clone, as a teammate or a codespace has it: no .env (git-ignored).
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    run([*git, "init", "-q"], baked)
    run([*git, "add", "-A"], baked)
    run([*git, "commit", "-qm", "Initial commit"], baked)
    project = developer_dir / "devcontainer-check"
    run(["git", "clone", "-q", str(baked), str(project)], developer_dir)
    assert not (project / ".env").exists()
    prefix, env = as_developer(developer_dir)
    if prefix:
        run(["chown", "-R", f"{DEVELOPER_UID}:{DEVELOPER_UID}", str(project)], developer_dir)
    # Host ports picked by Docker: other stacks on this machine may hold 5432 and 6379.
    env |= {"POSTGRES_PORT": "0", "REDIS_PORT": "0"}
    devcontainer = [*prefix, node, str(cli / "devcontainer.js")]
    workspace = ["--workspace-folder", str(project)]
    compose = ["docker", "compose", "-f", "compose.yaml", "-f", ".devcontainer/compose.yaml"]
    try:
        started = time.monotonic()
        with machine_load(exclusive=False):
            up = run([*devcontainer, "up", *workspace], project, env=env, timeout=900)
        up_seconds = time.monotonic() - started
        outcome = json.loads(up.stdout.strip().splitlines()[-1])
        assert outcome["outcome"] == "success", up.stdout[-3000:]
        assert outcome["remoteUser"] == "dev"

        def inside(*command: str) -> subprocess.CompletedProcess[str]:
            return run([*devcontainer, "exec", *workspace, *command], project, env=env)

        # initializeCommand made .env on the host, the developer's and private.
        made = (project / ".env").stat()
        owner = DEVELOPER_UID if prefix else os.getuid()
        assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (owner, 0o600)
        values = env_values((project / ".env").read_text()).values()
        assert not [value for value in values if PLACEHOLDER_VALUE in value]
        # Non-root, in the mounted source, on the interpreter the editor is told about.
        assert inside("id", "-u").stdout.strip() != "0"
        config = load_jsonc(project / ".devcontainer" / "devcontainer.json")
        interpreter = config["customizations"]["vscode"]["settings"][
            "python.defaultInterpreterPath"
        ]
        executable = inside(
            "uv", "run", "--locked", "python", "-c", "import sys; print(sys.executable)"
        )
        assert executable.stdout.strip() == interpreter
        inside("touch", "written-inside")
        assert (project / "written-inside").exists()
        (project / "written-inside").unlink()
        assert (project / ".git" / "hooks" / "pre-commit").exists(), "postCreateCommand"

        started = time.monotonic()
        # The generated tests that need each service (PostgreSQL, Redis), from inside: what
        # the container adds is reaching them by the compose names in .env. The whole suite
        # passes on a default bake in test_ci_github.py; a second run here cost a minute.
        services_tests = [
            "tests/test_health_db.py",
            "tests/test_health_cache.py",
            "tests/test_items.py",
        ]
        assert all((project / path).exists() for path in services_tests)
        tests = inside("uv", "run", "pytest", "-p", "no:cacheprovider", "--no-cov", *services_tests)
        test_seconds = time.monotonic() - started
        summary = tests.stdout.strip().splitlines()[-1]
        assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary

        # A rebuilt container finds the locked environment in the cached volume.
        started = time.monotonic()
        rebuild = [*devcontainer, "up", "--remove-existing-container", *workspace]
        again = run(rebuild, project, env=env, timeout=900)
        again_seconds = time.monotonic() - started
        log = again.stdout + again.stderr
        assert "Downloaded " not in log and "Installed " not in log, log[-3000:]
        record_property(
            "figure",
            f"devcontainer up {up_seconds:.0f} s (image built), uv run pytest inside "
            f"{test_seconds:.0f} s, up again on the cached volume {again_seconds:.0f} s",
        )
    finally:
        # The CLI names the compose project after the folder, as compose does, and
        # runs `dev` on an image of its own for this folder (`vsc-...-uid`, the
        # developer's uid): one per run, so it goes too.
        labels = [f"label=com.docker.compose.project={project.name}"]
        labels.append("label=com.docker.compose.service=dev")
        listed = ["docker", "ps", "-a", "--format", "{{.Image}}"]
        for label in labels:
            listed += ["--filter", label]
        images = run(listed, project, check=False).stdout.split()
        down = [*compose, "-p", project.name, "down", "-v", "--remove-orphans"]
        run(down, project, check=False)
        for image in images:
            if image.startswith("vsc-"):
                run(["docker", "image", "rm", image], project, check=False)

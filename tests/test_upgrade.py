"""Every earlier release upgrades to this one: files, edits, schema and data intact.

For each release tag (tests/releases.py: read from the repository, never listed
here), a service is made with ``cruft create --checkout vX.Y.Z`` from a clone of
this repository, gets edits of its own, and its database is migrated at that
release and given rows. Then it follows the CHANGELOG's "after updating" steps
to this working tree: ``cruft update``, the removals command, ``uv lock``. No
``.rej``, the edits kept, ``alembic upgrade head`` and ``alembic check`` clean
on the database migrated at the old release, its rows intact, and the
service's own suite green against that server.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR, require_docker, run
from tests.releases import Release, releases, resolve
from tests.test_cruft import GIT_IDENTITY, commit_all, edit, git, rejects
from tests.test_service_suite import assert_suite_passed

# No xdist group: the releases may run on different workers, each with its own servers.
pytestmark = [pytest.mark.docker, pytest.mark.services]

OWN_MODULE = '''"""Ours, not the template's: survives every template update."""


def greeting(name: str) -> str:
    return f"hello {name}"
'''
OWN_TEST = """from my_service.own import greeting


def test_greeting() -> None:
    assert greeting("fleet") == "hello fleet"
"""
NOTES = "Owned by payments; on call: #payments-oncall.\n"
ROWS = ["made at the old release", "and another"]


def template_clone(destination: Path) -> Path:
    """A clone of this repository (its release tags included) whose newest commit is
    this working tree, uncommitted edits and all: cruft takes templates from git."""
    run(["git", "clone", "--quiet", str(TEMPLATE_DIR), str(destination)], destination.parent)
    # The template's repository has a tag per release, and services check them out by
    # name. A source cloned without tags gets them here from the commits CHANGELOG.md
    # names (tests/releases.py), so `--checkout vX.Y.Z` means the same in both.
    for release in releases():
        if resolve(release.tag, destination) is None:
            git(destination, "tag", release.tag, release.commit)
    for entry in destination.iterdir():
        if entry.name != ".git":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".tools", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"
    )
    shutil.copytree(TEMPLATE_DIR, destination, ignore=ignore, dirs_exist_ok=True)
    git(destination, "add", "-A")
    git(destination, "commit", "--quiet", "--allow-empty", "-m", "This working tree")
    return destination


@dataclass
class Servers:
    postgres_port: int
    redis_port: int
    names: list[str]

    def database_url(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres:upgrade@127.0.0.1:{self.postgres_port}/{database}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def sql(self, database: str, statement: str) -> str:
        command = ["docker", "exec", self.names[0], "psql", "-U", "postgres", "-d", database]
        result = run([*command, "-tAc", statement], TEMPLATE_DIR)
        return result.stdout.strip()


def published_port(name: str, port: int) -> int:
    output = run(["docker", "port", name, str(port)], TEMPLATE_DIR).stdout
    return int(output.splitlines()[0].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    """One PostgreSQL and one Redis for every release's service, on ports of their own."""
    require_docker()
    suffix = uuid.uuid4().hex[:8]
    names = [f"upgrade-pg-{suffix}", f"upgrade-redis-{suffix}"]
    try:
        run(
            ["docker", "run", "-d", "--name", names[0], "-e", "POSTGRES_PASSWORD=upgrade",
             "-p", "127.0.0.1::5432", "postgres:17"],
            TEMPLATE_DIR,
        )  # fmt: skip
        run(["docker", "run", "-d", "--name", names[1], "-p", "127.0.0.1::6379", "redis:8"],
            TEMPLATE_DIR)  # fmt: skip
        ready = ["docker", "exec", names[0], "pg_isready", "-U", "postgres", "-h", "127.0.0.1"]
        deadline = time.monotonic() + 120
        while subprocess.run(ready, capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not come up"
            time.sleep(0.5)
        yield Servers(published_port(names[0], 5432), published_port(names[1], 6379), names)
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", *names], capture_output=True, check=False)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return template_clone(tmp_path_factory.mktemp("upgrade") / "template")


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "-m", "cruft", *args], cwd, env=GIT_IDENTITY)


def knows_auth(template: Path, step: Release | None) -> bool:
    """Whether the template at this update step (None: the working tree) has `auth`."""
    if step is None:
        text = (template / "cookiecutter.json").read_text()
    else:
        text = git(template, "show", f"{step.commit}:cookiecutter.json").stdout
    return "auth" in json.loads(text)


def choose_auth(service: Path, release: Release) -> str:
    """The CHANGELOG's step before the update that brings `auth`: the oldest release's
    service keeps its API open ("auth": "none" in .cruft.json), the others take the
    default, oidc (whose settings go in .env after the update)."""
    if release != releases()[0]:
        return "oidc"
    state = json.loads((service / ".cruft.json").read_text())
    state["context"]["cookiecutter"]["auth"] = "none"
    (service / ".cruft.json").write_text(json.dumps(state, indent=2) + "\n")
    commit_all(service, "cruft: keep the API open (auth=none)")
    return "none"


@pytest.mark.parametrize("release", releases(), ids=lambda release: release.tag)
def test_a_service_made_at_a_release_upgrades_to_this_one(
    release: Release,
    template: Path,
    servers: Servers,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    started = time.monotonic()
    cruft(tmp_path, "create", str(template), "--checkout", release.tag, "--no-input")
    service = tmp_path / "my-service"
    # Under cruft the hook locks offline only (since 0.2.0) and says to run `uv lock`
    # when that could not resolve: what a team does before its first commit.
    run(["uv", "lock"], service)
    git(service, "init", "--quiet", "--initial-branch", "main")
    commit_all(service, f"Made from the template's {release.tag}")

    # The service's own: a module with its test, notes in its README.
    (service / "src/my_service/own.py").write_text(OWN_MODULE)
    (service / "tests/test_own.py").write_text(OWN_TEST)
    # (Under the title: where the template has not changed a line since 0.1.0. An edit
    # beside the template's own changes is a conflict, which tests/test_cruft.py covers.)
    edit(service / "README.md", lambda text: text.replace("\n", f"\n\n{NOTES}", 1))
    commit_all(service, "Our own module and notes")
    readme = (service / "README.md").read_text()

    # Its database, migrated at that release, with rows in it.
    database = f"upgrade_{release.version.replace('.', '_')}"
    servers.sql("postgres", f"CREATE DATABASE {database}")
    env = {"DATABASE_URL": servers.database_url(database), "REDIS_URL": servers.redis_url}
    run(["uv", "sync", "--locked"], service)
    run(["uv", "run", "--locked", "alembic", "upgrade", "head"], service, env=env)
    values = ", ".join(f"('{name}')" for name in ROWS)
    servers.sql(database, f"INSERT INTO items (name) VALUES {values}")
    made = time.monotonic()

    # The CHANGELOG's steps. 0.2.0: a service whose pyproject.toml has no
    # [tool.cruft] skip list (made before 0.2.0) puts it in .cruft.json first.
    if "[tool.cruft]" not in (service / "pyproject.toml").read_text():
        state = json.loads((service / ".cruft.json").read_text())
        state["skip"] = [".env", "uv.lock"]
        (service / ".cruft.json").write_text(json.dumps(state, indent=2) + "\n")
        commit_all(service, "cruft: skip .env and uv.lock")
    env_before = (service / ".env").read_bytes()
    # Release by release (`cruft update --checkout vX.Y.Z`), then to this working tree.
    later = [r for r in releases() if r.key() > release.key()]
    answers = json.loads((service / ".cruft.json").read_text())["context"]["cookiecutter"]
    auth: str | None = answers.get("auth")
    for step in [*later, None]:
        if auth is None and knows_auth(template, step):
            # The CHANGELOG's step, just before the update that brings the option: an
            # update to an older release would drop an answer its template does not know.
            auth = choose_auth(service, release)
        checkout = ["--checkout", step.tag] if step else []
        updated = cruft(service, "update", "--skip-apply-ask", *checkout)
        output = updated.stdout + updated.stderr
        assert rejects(service) == [], output
        assert git(service, "ls-files", "--unmerged").stdout == "", output
        assert "conflict" not in output.lower(), output
        assert (service / ".env").read_bytes() == env_before, "cruft touched the .env"
        recorded = json.loads((service / ".cruft.json").read_text())["commit"]
        assert recorded == (
            step.commit if step else git(template, "rev-parse", "HEAD").stdout.strip()
        )
        if step:
            commit_all(service, f"Template {step.tag}")
    run([sys.executable, "scripts/template_update.py", "removals"], service)
    # 0.2.0: renamed and removed settings, in every environment's configuration.
    dotenv = (service / ".env").read_text()
    dotenv = dotenv.replace(
        "DATABASE_COMMAND_TIMEOUT_SECONDS=", "DATABASE_STATEMENT_TIMEOUT_SECONDS="
    )
    dotenv = "".join(line for line in dotenv.splitlines(True) if not line.startswith("SECRET_KEY="))
    if auth == "oidc" and "AUTH_ISSUER_URL=" not in dotenv:  # the issuer's, the dev one
        dotenv += (
            "AUTH_ISSUER_URL=http://issuer:3000\nAUTH_AUDIENCE=api://my-service\n"
            "COMPOSE_PROFILES=dev-issuer\n"
        )
    (service / ".env").write_text(dotenv)
    run(["uv", "lock"], service)
    run(["uv", "sync", "--locked"], service)
    commit_all(service, "Template update")

    # The answer taken for `auth`, and only its files.
    answers = json.loads((service / ".cruft.json").read_text())["context"]["cookiecutter"]
    assert answers["auth"] == auth
    assert (service / "src/my_service/auth.py").exists() == (auth == "oidc")
    assert (service / "dev-issuer").exists() == (auth == "oidc")

    # Nothing of the service's own was lost.
    assert (service / "src/my_service/own.py").read_text() == OWN_MODULE
    assert (service / "tests/test_own.py").read_text() == OWN_TEST
    assert NOTES in (service / "README.md").read_text()
    assert (service / "README.md").read_text() != readme, (
        "the template's README changes are missing"
    )

    # The database migrated at the old release: at head, models and schema agree, rows kept.
    run(["uv", "run", "--locked", "alembic", "upgrade", "head"], service, env=env)
    heads = run(["uv", "run", "--locked", "alembic", "heads"], service, env=env).stdout.split()[0]
    current = run(["uv", "run", "--locked", "alembic", "current"], service, env=env).stdout
    assert current.split()[0] == heads, current
    run(["uv", "run", "--locked", "alembic", "check"], service, env=env)
    assert servers.sql(database, "SELECT name FROM items ORDER BY id").splitlines() == ROWS

    # The service's own suite, its module included, against that server (it makes its
    # own test database beside the migrated one, which it leaves alone).
    suite = run(
        ["uv", "run", "--locked", "pytest", "-p", "no:cacheprovider", "-q"], service, env=env
    )
    assert_suite_passed(suite.stdout, record_property)
    assert (
        "test_own.py"
        in run(
            ["uv", "run", "--locked", "pytest", "--collect-only", "-q", "tests/test_own.py"],
            service,
        ).stdout
    )
    assert servers.sql(database, "SELECT name FROM items ORDER BY id").splitlines() == ROWS
    record_property(
        "figure",
        f"{release.tag}: made and migrated {made - started:.0f} s, "
        f"updated and verified {time.monotonic() - made:.0f} s",
    )

"""The generated service's own test suite passes against real PostgreSQL and Redis."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.compose import ComposeStack
from tests.helpers import VARIANTS, bake, context_of, run

# Both: the backing services run as compose containers.
pytestmark = [pytest.mark.services, pytest.mark.docker]


def backing_services(
    project: Path, context: dict[str, object], make: Callable[[Path, str], ComposeStack]
) -> dict[str, str]:
    """Start the project's own db/redis containers; return the URLs for its tests."""
    services = [
        name
        for name, on in (("db", context["use_postgres"]), ("redis", context["use_redis"]))
        if on
    ]
    if not services:
        return {}
    stack = make(project, "svc")
    stack.up(*services)
    secrets = stack.dotenv()
    env = {}
    if context["use_postgres"]:
        port = stack.port("db", 5432)
        env["DATABASE_URL"] = (
            f"postgresql+asyncpg://app:{secrets['POSTGRES_PASSWORD']}@127.0.0.1:{port}/app"
        )
    if context["use_redis"]:
        port = stack.port("redis", 6379)
        env["REDIS_URL"] = f"redis://:{secrets['REDIS_PASSWORD']}@127.0.0.1:{port}/0"
    return env


# The generated pyproject.toml's [tool.coverage.report] fail_under.
COVERAGE_FLOOR = 90


def assert_suite_passed(output: str, record_property: Callable[[str, object], None]) -> None:
    """The generated suite's own command passed whole, with its coverage floor."""
    summary = output.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), summary
    assert not re.search(r"skipped|xfailed|error", summary), summary
    # The suite's own command measures branch coverage and holds the floor.
    reached = re.search(
        rf"Required test coverage of {COVERAGE_FLOOR}(\.0)?% reached\. "
        r"Total coverage: (?P<total>[\d.]+)%",
        output,
    )
    assert reached is not None, output[-3000:]
    assert float(reached["total"]) >= COVERAGE_FLOOR
    record_property("figure", f"branch coverage {reached['total']} %")


# The ci=github bakes (default, no-redis, no-postgres) run their suite through
# their own CI job: tests/test_ci_github.py. no-example-api: tracing without
# the example API, and a package name unlike the distribution's.
@pytest.mark.parametrize("variant", ["all-off", "no-example-api"])
def test_generated_suite_passes(
    variant: str,
    tmp_path: Path,
    compose_stack: Callable[[Path, str], ComposeStack],
    record_property: Callable[[str, object], None],
) -> None:
    project = bake(tmp_path, **VARIANTS[variant])
    env = backing_services(project, context_of(**VARIANTS[variant]), compose_stack)
    run(["uv", "sync", "--locked"], project)
    result = run(
        ["uv", "run", "--locked", "pytest", "-p", "no:cacheprovider", "-q"], project, env=env
    )
    assert_suite_passed(result.stdout, record_property)


def test_tests_without_services_run_without_docker(tmp_path: Path) -> None:
    """The README's laptop command: everything not marked `services` passes with nothing up."""
    project = bake(tmp_path)
    run(["uv", "sync", "--locked"], project)
    # Port 1 on loopback: a test that reached for a service would fail at once.
    env = {
        "DATABASE_URL": "postgresql+asyncpg://app:x@127.0.0.1:1/app",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    command = ["uv", "run", "--locked", "pytest", "-p", "no:cacheprovider", "-q"]
    result = run([*command, "-m", "not services", "--no-cov"], project, env=env)
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed, \d+ deselected", summary), summary
    assert not re.search(r"skipped|xfailed|error|failed", summary), summary


def test_unreachable_services_fail_with_one_line_hint(tmp_path: Path) -> None:
    project = bake(tmp_path)
    run(["uv", "sync", "--locked"], project)
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    env = {
        "DATABASE_URL": "postgresql+asyncpg://app:x@127.0.0.1:1/app",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = run(
        ["uv", "run", "pytest", "-q", "-p", "no:cacheprovider"], project, env=env, check=False
    )
    assert result.returncode != 0
    hint = [
        line
        for line in result.stdout.splitlines()
        if "docker compose up -d --wait db redis" in line
    ]
    assert len(hint) == 1, result.stdout[-3000:]
    # Whichever service is asked first is named; the hint starts both.
    assert re.search(r"(PostgreSQL|Redis) at \S*127\.0\.0\.1:1\b", hint[0]), hint[0]

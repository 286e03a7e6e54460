"""The prune manifest and the template tree agree."""

from __future__ import annotations

import pytest

from hooks.post_gen_project import MANIFEST
from hooks.pre_gen_project import CHOICES
from tests.helpers import COOKIECUTTER_JSON, TEMPLATE_PROJECT

PACKAGE_DIR = "{{cookiecutter.package_name}}"


@pytest.mark.parametrize("path", sorted({p for paths in MANIFEST.values() for p in paths}), ids=str)
def test_every_manifest_path_exists_in_the_template(path: str) -> None:
    assert (TEMPLATE_PROJECT / path.format(package=PACKAGE_DIR)).exists()


def test_every_manifest_key_is_a_real_option_value() -> None:
    for option, value in MANIFEST:
        choices = COOKIECUTTER_JSON[option]
        assert value in (choices if isinstance(choices, list) else [True, False]), option


def test_hook_choices_match_cookiecutter_json() -> None:
    for option, allowed in CHOICES.items():
        assert sorted(allowed) == sorted(COOKIECUTTER_JSON[option]), option


# Written by hand, independent of MANIFEST: the Python files every service gets,
# whatever it chose. Every other module and test must be owned by an option value
# in MANIFEST, so a file dropped from it (and then shipped to every bake) fails here
# instead of passing a check that reads MANIFEST as its own answer key.
ALWAYS_SHIPPED = {
    f"src/{PACKAGE_DIR}/{name}.py"
    for name in (
        "__init__", "__main__", "access_log", "api/__init__", "body_limit", "errors",
        "health", "healthcheck", "logging_config", "main", "request_id", "settings",
    )
} | {
    f"tests/{name}.py"
    for name in (
        "__init__", "conftest", "mutation", "plugins/__init__", "plugins/hookspecs",
        "test_access_log", "test_body_limit", "test_contract", "test_errors", "test_health",
        "test_healthcheck", "test_logging", "test_main", "test_request_id", "test_settings",
    )
}  # fmt: skip


def test_every_module_and_test_is_always_shipped_or_owned_by_an_option() -> None:
    owned = {path.format(package=PACKAGE_DIR) for paths in MANIFEST.values() for path in paths}
    files = {
        path.relative_to(TEMPLATE_PROJECT).as_posix()
        for folder in ("src", "tests")
        for path in (TEMPLATE_PROJECT / folder).rglob("*.py")
    }
    in_manifest = {f for f in files if any(f == o or f.startswith(f"{o}/") for o in owned)}
    assert files - in_manifest == ALWAYS_SHIPPED
    assert not in_manifest & ALWAYS_SHIPPED, "a file is either always shipped or owned"


# Jinja conditionals in Python belong to the wiring; everywhere else an option owns
# files (pruned by MANIFEST) rather than `{% if %}` blocks. A file leaves this list
# when its last conditional goes; a file joins it only with a reason.
PYTHON_WITH_CONDITIONALS = {
    # The app factory and lifespan: which clients, probes and instrumentation exist.
    f"src/{PACKAGE_DIR}/main.py",
    # The configuration: every option's settings and their validation.
    f"src/{PACKAGE_DIR}/settings.py",
    # Starting uvicorn: the metrics directory its workers share, emptied first.
    f"src/{PACKAGE_DIR}/uvicorn_server.py",
    # gunicorn's own configuration: the metrics hooks of the master process.
    "gunicorn.conf.py",
    # The API's router registry: the example resource's router (and its rate policies).
    f"src/{PACKAGE_DIR}/api/__init__.py",
    # Alembic's registry of models: the example resource's table.
    "migrations/env.py",
    # The list of option-owned test plugins.
    "tests/conftest.py",
    # The stateful run needs the example's OpenAPI links (none: Schemathesis refuses).
    "tests/test_contract.py",
    # The Redis password check needs a real database password beside it, with Postgres.
    "tests/test_settings_cache.py",
    # The loggers the chosen server writes to, which the JSON handler takes over.
    f"src/{PACKAGE_DIR}/logging_config.py",
    # The worker: the example's job module, the database engine jobs get with Postgres,
    # and the heartbeat of Kubernetes' liveness probe.
    f"src/{PACKAGE_DIR}/worker.py",
    # The worker's test plugin: each worker's /metrics port (a free one), with metrics.
    "tests/plugins/worker.py",
    # The example with the worker: its create route enqueues the job, whose column
    # the table gains in a revision that carries the schema gate's marker on Kubernetes.
    f"src/{PACKAGE_DIR}/api/items.py",
    f"src/{PACKAGE_DIR}/models.py",
    "migrations/versions/0003_items_processed_at.py",
}


def test_python_conditionals_stay_in_the_wiring() -> None:
    found = {
        path.relative_to(TEMPLATE_PROJECT).as_posix()
        for path in TEMPLATE_PROJECT.rglob("*.py")
        if "{%" in path.read_text()
    }
    outside = found - PYTHON_WITH_CONDITIONALS
    assert outside == set(), "give the option a file of its own (MANIFEST) instead"
    assert PYTHON_WITH_CONDITIONALS - found == set(), "no conditional left: take it off the list"

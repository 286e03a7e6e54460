"""Validate the answers before cookiecutter writes a single file.

Cookiecutter renders this file with Jinja and runs it as a script. Everything
template-specific comes in through ``CONTEXT`` below, so the functions stay
importable and are unit-tested from ``tests/test_hooks.py``.

A rejection prints one line naming the value and the rule, and exits 1;
cookiecutter then removes the directory it had created, so nothing is left.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from collections.abc import Mapping
from typing import Any

# Raw string: the JSON may contain backslashes, and ``\"`` can never close it.
_RENDERED = r"""{{ cookiecutter | jsonify }}"""

SLUG_RE = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
PACKAGE_RE = re.compile(r"[a-z][a-z0-9_]*")
# Matched whole (fullmatch): a trailing newline is not a valid answer.
# Deliberately strict: one @, no spaces or quotes, a dotted domain. It catches typos,
# it is not an RFC 5322 parser.
EMAIL_RE = re.compile(r"[^@\s\"\\]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
VERSION_RE = re.compile(r"\d+(\.\d+){0,2}([ab]|rc|\.dev|\.post)?\d*")

CHOICES: dict[str, tuple[str, ...]] = {
    "python_version": ("3.12", "3.13", "3.14"),
    "postgres_version": ("16", "17", "18"),
    "redis_version": ("7", "8"),
    "server": ("gunicorn", "uvicorn"),
    "ci": ("github", "gitlab", "none"),
    "license": ("MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"),
    "auth": ("oidc", "none"),
}

# Top-level modules the generated service imports, or that tooling imports by
# name: a package called like one of them would shadow it.
DEPENDENCY_MODULES = frozenset(
    {
        "alembic",
        "anyio",
        "asyncpg",
        "click",
        "cryptography",
        "deprecated",
        "dotenv",
        "greenlet",
        "h11",
        "httptools",
        "mako",
        "fastapi",
        "gunicorn",
        "httpx",
        "joserfc",
        "limits",
        "migrations",
        "mypy",
        "opentelemetry",
        "prometheus_client",
        "pydantic",
        "pydantic_settings",
        "pytest",
        "pytest_asyncio",
        "redis",
        "ruff",
        "sqlalchemy",
        "starlette",
        "taskiq",
        "taskiq_redis",
        "tests",
        "uvicorn",
        "uvicorn_worker",
        "uvloop",
        "watchfiles",
        "websockets",
        "wrapt",
        "yaml",
    }
)


class ValidationError(Exception):
    """An answer that breaks a rule; the message is shown to the user as is."""


def stdlib_modules() -> frozenset[str]:
    """Names of the standard library's top-level modules for this interpreter."""
    # sys.stdlib_module_names leaves out CPython's own ``test`` package, which
    # is installed all the same and is the classic name clash.
    return frozenset(sys.stdlib_module_names) | {"test"}


# Generated lines embed these names; the limits keep every line under ruff's 100.
MAX_PROJECT_NAME = 60
MAX_PACKAGE_NAME = 40


def validate_project_name(name: str) -> None:
    if not name.strip():
        raise ValidationError("project_name is empty: give the service a name.")
    if not any(character.isalnum() for character in name):
        raise ValidationError(
            f"project_name {name!r} has no letter or digit to derive project_slug from."
        )
    if len(name) > MAX_PROJECT_NAME:
        raise ValidationError(
            f"project_name {name!r} is longer than {MAX_PROJECT_NAME} characters."
        )


def validate_description(description: str) -> None:
    if "\n" in description or "\r" in description:
        raise ValidationError("description must be a single line.")


def validate_slug(slug: str) -> None:
    if not SLUG_RE.fullmatch(slug):
        raise ValidationError(
            f"project_slug {slug!r} is not lowercase kebab-case "
            "(letters, digits and single hyphens, starting with a letter)."
        )
    if len(slug) > MAX_PROJECT_NAME:
        raise ValidationError(
            f"project_slug {slug!r} is longer than {MAX_PROJECT_NAME} characters."
        )


def validate_package_name(name: str) -> None:
    if not PACKAGE_RE.fullmatch(name) or not name.isascii():
        raise ValidationError(
            f"package_name {name!r} is not a lowercase Python identifier "
            "(a-z, 0-9 and _, starting with a letter)."
        )
    if len(name) > MAX_PACKAGE_NAME:
        raise ValidationError(
            f"package_name {name!r} is longer than {MAX_PACKAGE_NAME} characters."
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ValidationError(f"package_name {name!r} is a Python keyword.")
    if name in stdlib_modules():
        raise ValidationError(
            f"package_name {name!r} would shadow the standard library module of that name."
        )
    if name in DEPENDENCY_MODULES:
        raise ValidationError(
            f"package_name {name!r} would shadow the {name!r} module the service depends on."
        )


def validate_email(email: str) -> None:
    if not EMAIL_RE.fullmatch(email):
        raise ValidationError(f"author_email {email!r} is not an email address (name@domain.tld).")


def validate_version(version: str) -> None:
    if not VERSION_RE.fullmatch(version):
        raise ValidationError(f"version {version!r} is not a PEP 440 version such as 0.1.0.")


def validate_choices(context: Mapping[str, Any]) -> None:
    for key, allowed in CHOICES.items():
        value = str(context[key])
        if value not in allowed:
            raise ValidationError(f"{key} {value!r} is not one of: {', '.join(allowed)}.")


def validate_combination(context: Mapping[str, Any]) -> None:
    if context["include_example_api"] and not context["use_postgres"]:
        raise ValidationError(
            "include_example_api=true needs use_postgres=true: the example resource "
            "is stored in PostgreSQL."
        )
    if context["use_worker"] and not context["use_redis"]:
        raise ValidationError(
            "use_worker=true needs use_redis=true: the jobs are queued in a Redis stream."
        )
    if context["use_rate_limit"] and not context["use_redis"]:
        raise ValidationError(
            "use_rate_limit=true needs use_redis=true: the limits are counted in Redis, "
            "shared by every worker and replica."
        )


# Kubernetes names the migration Job <slug>-migrate-<release tag>; a Job's name is also a
# label value, so at most 63 characters. This much room is kept for the tag (1.2.3-rc.1,
# a 12-character commit).
JOB_NAME_LIMIT = 63
RELEASE_TAG_ROOM = 16


def validate_kubernetes_names(context: Mapping[str, Any]) -> None:
    if not (context["use_kubernetes"] and context["use_postgres"]):
        return
    slug, version = str(context["project_slug"]), str(context["version"])
    prefix = f"{slug}-migrate-"
    room = JOB_NAME_LIMIT - len(prefix)
    if room < max(RELEASE_TAG_ROOM, len(version)):
        raise ValidationError(
            f"project_slug {slug!r} is too long for Kubernetes: the migration Job "
            f"{prefix}<release tag> must fit {JOB_NAME_LIMIT} characters with a tag of "
            f"{max(RELEASE_TAG_ROOM, len(version))}; shorten it to "
            f"{len(slug) - max(RELEASE_TAG_ROOM, len(version)) + room} characters."
        )


def validate(context: Mapping[str, Any]) -> None:
    """Raise ValidationError for the first answer that breaks a rule."""
    validate_project_name(str(context["project_name"]))
    validate_description(str(context["description"]))
    validate_slug(str(context["project_slug"]))
    validate_package_name(str(context["package_name"]))
    validate_email(str(context["author_email"]))
    validate_version(str(context["version"]))
    validate_choices(context)
    validate_combination(context)
    validate_kubernetes_names(context)


def main() -> int:
    context: dict[str, Any] = json.loads(_RENDERED)
    try:
        validate(context)
    except ValidationError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

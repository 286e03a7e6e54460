"""Finish a bake: prune what was not chosen, write secrets, lock, say what is next.

Cookiecutter renders this file with Jinja and runs it inside the new project
directory. The functions take everything they need as arguments, so
``tests/test_hooks.py`` imports and exercises them directly. Stdlib only: the
hook runs on whatever Python runs cookiecutter (3.10 or newer).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

# Raw string: the JSON may contain backslashes, and ``\"`` can never close it.
_RENDERED = r"""{{ cookiecutter | jsonify }}"""

# The single source of truth for pruning: each option value owns the paths
# listed for it, relative to the generated project, with ``{package}`` standing
# for the package directory. The paths of every value that was NOT chosen are
# removed. ``tests/test_manifest.py`` checks that each path exists in the
# template, so a renamed file cannot silently escape pruning.
MANIFEST: dict[tuple[str, object], tuple[str, ...]] = {
    ("use_postgres", True): (
        "alembic.ini",
        "migrations",
        "src/{package}/db.py",
        "tests/test_db.py",
    ),
    ("use_redis", True): (
        "src/{package}/cache.py",
        "tests/test_cache.py",
    ),
    ("include_example_api", True): (
        "src/{package}/api/items.py",
        "src/{package}/models.py",
        "migrations/versions/0001_create_items.py",
        "tests/test_items.py",
    ),
    ("server", "gunicorn"): ("gunicorn.conf.py",),
    ("use_kubernetes", True): ("deploy/kubernetes",),
    ("ci", "github"): (".github",),
    ("ci", "gitlab"): (".gitlab-ci.yml",),
}

# Placeholders in .env.example that must never reach a running service; each is
# replaced by a fresh random value in .env.
SECRET_PLACEHOLDERS = ("SECRET_KEY", "POSTGRES_PASSWORD", "REDIS_PASSWORD")
PLACEHOLDER_VALUE = "change-me"
# URLs in .env that embed one of those passwords (``scheme://user:change-me@host``).
URL_PASSWORDS = {"DATABASE_URL": "POSTGRES_PASSWORD", "REDIS_URL": "REDIS_PASSWORD"}

UV_LOCK_TIMEOUT_SECONDS = 300

# The local Kubernetes overlay's secrets (git-ignored), made like .env from its example.
LOCAL_CLUSTER_SECRETS = "deploy/kubernetes/overlays/local/secrets.env"


def paths_to_remove(
    context: Mapping[str, Any], manifest: Mapping[tuple[str, object], Iterable[str]] = MANIFEST
) -> list[str]:
    """The manifest paths owned by option values the user did not choose."""
    package = str(context["package_name"])
    chosen: set[str] = set()
    unchosen: list[str] = []
    for (option, value), paths in manifest.items():
        formatted = [p.format(package=package) for p in paths]
        if context[option] == value:
            chosen.update(formatted)
        else:
            unchosen.extend(formatted)
    # A path kept by a chosen value wins (e.g. migrations/ stays with Postgres
    # even though no example API was chosen).
    return sorted(p for p in set(unchosen) if p not in chosen)


def remove_paths(project_dir: Path, paths: Iterable[str]) -> None:
    for relative in paths:
        target = project_dir / relative
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def generate_secrets(env_example: str, token: Callable[[], str] | None = None) -> str:
    """Return .env text: .env.example with every placeholder secret replaced.

    A URL that embeds a password gets the same value as the password variable,
    so the app on the host and the containers agree.
    """
    make_token = token or (lambda: secrets.token_urlsafe(32))
    generated: dict[str, str] = {}
    lines = env_example.splitlines()
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key in SECRET_PLACEHOLDERS and value == PLACEHOLDER_VALUE:
            generated[key] = make_token()
            lines[index] = f"{key}={generated[key]}"
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=")
        owner = URL_PASSWORDS.get(key)
        if sep and owner in generated:
            placeholder = f":{PLACEHOLDER_VALUE}@"
            lines[index] = f"{key}={value.replace(placeholder, f':{generated[owner]}@')}"
    return "\n".join(lines) + "\n"


def write_env(project_dir: Path, example: str = ".env.example", target: str = ".env") -> None:
    """Write .env readable by its owner only, from the first byte on."""
    text = generate_secrets((project_dir / example).read_text())
    descriptor = os.open(project_dir / target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as env:
        env.write(text)


def lock_commands() -> list[list[str]]:
    """Online first; then offline, which succeeds when uv's cache already holds
    every package (a warm cache). A cold cache cannot re-resolve offline."""
    return [["uv", "lock"], ["uv", "lock", "--offline"]]


def lock_dependencies(project_dir: Path) -> str | None:
    """Make uv.lock match the pruned pyproject.toml; None, or why it could not."""
    if shutil.which("uv") is None:
        return "uv is not on PATH"
    reason = "uv lock failed"
    for command in lock_commands():
        try:
            result = subprocess.run(
                command,
                cwd=project_dir,
                capture_output=True,
                text=True,
                timeout=UV_LOCK_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            reason = f"`{' '.join(command)}` took over {UV_LOCK_TIMEOUT_SECONDS} s"
            continue
        if result.returncode == 0:
            return None
        # uv's last line says why (index unreachable, no interpreter, bad TOML...).
        last_lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = last_lines[-1].strip() if last_lines else f"exit status {result.returncode}"
    return reason


def next_steps(context: Mapping[str, Any], lock_problem: str | None) -> str:
    slug = context["project_slug"]
    lines = [f"\nCreated {slug}. Next:", f"  cd {slug}"]
    if lock_problem is not None:
        lines.append(f"  uv lock            # uv.lock could not be refreshed here: {lock_problem}")
    lines += [
        "  git init && git add -A && git commit -m 'Initial commit'",
        "  docker compose up --build        # app on http://localhost:8000/health/ready",
        "  uv sync && uv run pytest         # tests (see README.md for the backing services)",
    ]
    return "\n".join(lines)


def main() -> int:
    context: dict[str, Any] = json.loads(_RENDERED)
    project_dir = Path.cwd()
    remove_paths(project_dir, paths_to_remove(context))
    write_env(project_dir)
    if (project_dir / f"{LOCAL_CLUSTER_SECRETS}.example").exists():
        write_env(project_dir, f"{LOCAL_CLUSTER_SECRETS}.example", LOCAL_CLUSTER_SECRETS)
    print(next_steps(context, lock_dependencies(project_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
# removed, so a path listed under several values (a test of the database's
# metrics) is kept only when all of them were chosen. ``tests/test_manifest.py``
# checks that each path exists in the template, so a renamed file cannot
# silently escape pruning.
MANIFEST: dict[tuple[str, object], tuple[str, ...]] = {
    ("use_postgres", True): (
        "alembic.ini",
        "migrations",
        "src/{package}/db.py",
        "src/{package}/database_url.py",
        "tests/test_db.py",
        "tests/test_db_connection.py",
        "tests/plugins/db.py",
        "tests/test_settings_db.py",
        "tests/test_health_db.py",
        "src/{package}/metrics_db.py",
        "tests/test_metrics_db.py",
        "tests/test_migration_env.py",
        "src/{package}/schema_gate.py",
        "tests/test_schema_gate.py",
        "tests/test_tracing_db.py",
    ),
    ("use_redis", True): (
        "src/{package}/cache.py",
        "tests/test_cache.py",
        "tests/plugins/cache.py",
        "tests/test_settings_cache.py",
        "tests/test_health_cache.py",
    ),
    # The worker; its example job and that job's column come with the example API too.
    ("use_worker", True): (
        "src/{package}/worker.py",
        "tests/test_worker.py",
        "tests/test_worker_process.py",
        "tests/plugins/worker.py",
        "src/{package}/periodic.py",
        "tests/test_worker_periodic.py",
        "src/{package}/metrics_worker.py",
        "tests/test_metrics_worker.py",
        "src/{package}/tracing_worker.py",
        "tests/test_tracing_worker.py",
        "src/{package}/jobs.py",
        "tests/test_jobs.py",
        "migrations/versions/0003_items_processed_at.py",
        "src/{package}/worker_liveness.py",
        "tests/test_worker_liveness.py",
        "deploy/kubernetes/base/worker.yaml",
    ),
    ("include_example_api", True): (
        "src/{package}/jobs.py",
        "tests/test_jobs.py",
        "migrations/versions/0003_items_processed_at.py",
        "src/{package}/api/items.py",
        "src/{package}/models.py",
        "migrations/versions/0001_create_items.py",
        "migrations/versions/0002_items_id_bigint_identity.py",
        "tests/test_items.py",
        "tests/test_items_auth.py",
        "tests/test_migrations.py",
        "tests/test_items_rate_limit.py",
    ),
    ("server", "gunicorn"): (
        "gunicorn.conf.py",
        "src/{package}/gunicorn_server.py",
        "tests/test_entrypoint_gunicorn.py",
    ),
    ("server", "uvicorn"): ("src/{package}/uvicorn_server.py", "tests/test_entrypoint_uvicorn.py"),
    # The Deployment's init container; with Postgres only (listed there too). The
    # worker's liveness heartbeat; with the worker only (listed there too).
    ("use_kubernetes", True): (
        "deploy/kubernetes",
        "src/{package}/schema_gate.py",
        "tests/test_schema_gate.py",
        "src/{package}/worker_liveness.py",
        "tests/test_worker_liveness.py",
    ),
    ("ci", "github"): (".github",),
    ("ci", "gitlab"): (".gitlab-ci.yml", "renovate.json"),
    ("use_metrics", True): (
        "src/{package}/metrics.py",
        "tests/test_metrics.py",
        "src/{package}/metrics_db.py",
        "tests/test_metrics_db.py",
        "src/{package}/metrics_auth.py",
        "tests/test_metrics_auth.py",
        "src/{package}/metrics_rate_limit.py",
        "tests/test_metrics_rate_limit.py",
        "src/{package}/metrics_worker.py",
        "tests/test_metrics_worker.py",
    ),
    ("use_tracing", True): (
        "src/{package}/tracing.py",
        "tests/test_tracing.py",
        "tests/plugins/tracing.py",
        "tests/test_tracing_auth.py",
        "tests/test_tracing_db.py",
        "tests/test_tracing_rate_limit.py",
        "src/{package}/tracing_worker.py",
        "tests/test_tracing_worker.py",
    ),
    ("auth", "oidc"): (
        "src/{package}/auth.py",
        "tests/test_auth.py",
        "tests/plugins/auth.py",
        "tests/test_settings_auth.py",
        "tests/test_items_auth.py",
        "src/{package}/metrics_auth.py",
        "tests/test_metrics_auth.py",
        "tests/test_tracing_auth.py",
        "src/{package}/rate_limit_auth.py",
        "tests/test_rate_limit_auth.py",
        "dev-issuer",
    ),
    ("use_devcontainer", True): (".devcontainer",),
    ("use_rate_limit", True): (
        "src/{package}/rate_limit.py",
        "tests/test_rate_limit.py",
        "src/{package}/metrics_rate_limit.py",
        "tests/test_metrics_rate_limit.py",
        "src/{package}/rate_limit_auth.py",
        "tests/test_rate_limit_auth.py",
        "tests/test_items_rate_limit.py",
        "tests/test_tracing_rate_limit.py",
    ),
}

# Placeholders in .env.example that must never reach a running service; each is
# replaced by a fresh random value in .env.
SECRET_PLACEHOLDERS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD")
PLACEHOLDER_VALUE = "change-me"
# URLs in .env that embed one of those passwords (``scheme://user:change-me@host``).
URL_PASSWORDS = {"DATABASE_URL": "POSTGRES_PASSWORD", "REDIS_URL": "REDIS_PASSWORD"}

UV_LOCK_TIMEOUT_SECONDS = 300

# The local Kubernetes overlay's secrets (git-ignored), made like .env from its example.
LOCAL_CLUSTER_SECRETS = "deploy/kubernetes/overlays/local/secrets.env"


def paths_to_remove(
    context: Mapping[str, Any], manifest: Mapping[tuple[str, object], Iterable[str]] = MANIFEST
) -> list[str]:
    """The manifest paths owned by an option value the user did not choose.

    A path under another one is its own entry: migrations/versions/0001... goes
    with the example API while migrations/ stays with Postgres.
    """
    package = str(context["package_name"])
    unchosen: set[str] = set()
    for (option, value), paths in manifest.items():
        if context[option] != value:
            unchosen.update(p.format(package=package) for p in paths)
    return sorted(unchosen)


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


def write_env(project_dir: Path, example: str = ".env.example", target: str = ".env") -> bool:
    """Write .env readable by its owner only, from the first byte on.

    An existing .env is never touched (False is returned): its secrets may
    already be in a database volume, and a re-bake (``cookiecutter -f``) or a
    template update must not lock the service out of its own data.
    """
    text = generate_secrets((project_dir / example).read_text())
    try:
        descriptor = os.open(project_dir / target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as env:
        env.write(text)
    return True


def uv_error(stderr: str) -> str | None:
    """The line of uv's output that says why (index unreachable, no interpreter, bad TOML...).

    uv starts its message with ``error:`` and may add causes below it; without
    such a line, the last one is the best guess.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    if errors:
        return errors[0]
    return lines[-1] if lines else None


def lock_commands(offline_only: bool = False) -> list[list[str]]:
    """Online first; then offline, which succeeds when uv's cache already holds
    every package (a warm cache). A cold cache cannot re-resolve offline.

    ``offline_only`` is for cruft's renders: ``cruft update`` renders the
    template twice in throwaway directories, and the service keeps its own
    uv.lock (it is in ``[tool.cruft] skip``), so those renders must not wait on
    the network.
    """
    offline = ["uv", "lock", "--offline"]
    return [offline] if offline_only else [["uv", "lock"], offline]


def lock_dependencies(project_dir: Path, offline_only: bool = False) -> str | None:
    """Make uv.lock match the pruned pyproject.toml; None, or why it could not."""
    if shutil.which("uv") is None:
        return "uv is not on PATH"
    reason = "uv lock failed"
    for command in lock_commands(offline_only):
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
        reason = uv_error(result.stderr) or f"exit status {result.returncode}"
    return reason


def next_steps(context: Mapping[str, Any], lock_problem: str | None) -> str:
    slug = context["project_slug"]
    lines = [f"\nCreated {slug}. Next:", f"  cd {slug}"]
    if lock_problem is not None:
        lines.append(f"  uv lock            # uv.lock could not be refreshed here: {lock_problem}")
    lines += [
        "  git init && git add -A && git commit -m 'Initial commit'",
        "  uv run pre-commit install         # lint, format and type-check on every commit",
        "  docker compose up --build        # app on http://localhost:8000/health/dependencies",
        "  uv sync && uv run pytest         # tests (see README.md for the backing services)",
    ]
    return "\n".join(lines)


def rendered_by_cruft(context: Mapping[str, Any]) -> bool:
    """True under ``cruft create``/``update``/``diff``: cruft adds ``_commit``.

    cruft writes .cruft.json itself, and during an update or a diff this render
    is a throwaway copy in a temporary directory.
    """
    return "_commit" in context


def git_output(arguments: list[str], cwd: Path) -> str | None:
    """A git command's stripped output, or None when git or the repository is missing."""
    if shutil.which("git") is None:
        return None
    try:
        result = subprocess.run(
            ["git", *arguments], cwd=cwd, capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def template_origin(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where a plain ``cookiecutter`` run took the template from, as cruft records it.

    ``_repo_dir`` is the template's checkout (cookiecutter's clone for a URL,
    or the directory given); its git commit is the version baked. None when it
    is not a git checkout (a zip, a copied folder): then only ``cruft link``
    can record the origin.
    """
    repo_dir = context.get("_repo_dir")
    if not repo_dir or not Path(repo_dir).is_dir():
        return None
    repo = Path(repo_dir).resolve()
    commit = git_output(["rev-parse", "HEAD"], repo)
    top = git_output(["rev-parse", "--show-toplevel"], repo)
    if not commit or not top:
        return None
    template = str(context.get("_template", ""))
    if Path(template).expanduser().is_dir():
        # A local checkout: record it by absolute path, as `cruft create` does.
        template = top
    else:
        # An abbreviation such as gh:org/name: cookiecutter cloned it, and the
        # clone knows the full URL that cruft (plain git) can clone again.
        template = git_output(["config", "--get", "remote.origin.url"], repo) or template
    top_dir = Path(top).resolve()
    directory = None if repo == top_dir else repo.relative_to(top_dir).as_posix()
    return {"template": template, "commit": commit, "directory": directory}


# Context keys that describe one machine's run, not the answers: not recorded.
MACHINE_LOCAL_KEYS = ("_output_dir", "_repo_dir", "_checkout")


def cruft_state(context: Mapping[str, Any], origin: Mapping[str, Any]) -> dict[str, Any]:
    """The .cruft.json that `cruft create` would have written for these answers."""
    answers = {key: value for key, value in context.items() if key not in MACHINE_LOCAL_KEYS}
    answers["_template"] = origin["template"]
    answers["_commit"] = origin["commit"]
    return {
        "template": origin["template"],
        "commit": origin["commit"],
        "checkout": None,
        "context": {"cookiecutter": answers},
        "directory": origin["directory"],
    }


def record_template(project_dir: Path, context: Mapping[str, Any]) -> str:
    """Write .cruft.json after a plain cookiecutter bake; say what happened, in one line."""
    target = project_dir / ".cruft.json"
    if target.exists():
        return "Kept the existing .cruft.json."
    origin = template_origin(context)
    if origin is None:
        return (
            "The template is not a git checkout, so no .cruft.json was written: "
            "run `cruft link <template-url>` in the service to enable `cruft update`."
        )
    text = json.dumps(cruft_state(context, origin), ensure_ascii=False, indent=2)
    target.write_text(text + "\n")
    message = f"Recorded the template and answers in .cruft.json ({origin['commit'][:12]})."
    if git_output(["status", "--porcelain"], Path(str(context["_repo_dir"]))):
        # `cruft update` will diff against that commit, not against these edits.
        message += " The template had uncommitted changes, which no commit records."
    return message


def main() -> int:
    context: dict[str, Any] = json.loads(_RENDERED)
    project_dir = Path.cwd()
    remove_paths(project_dir, paths_to_remove(context))
    env_written = write_env(project_dir)
    if (project_dir / f"{LOCAL_CLUSTER_SECRETS}.example").exists():
        write_env(project_dir, f"{LOCAL_CLUSTER_SECRETS}.example", LOCAL_CLUSTER_SECRETS)
    if rendered_by_cruft(context):
        # Quiet: `cruft update` runs this twice per update. Only a problem is worth a line.
        problem = lock_dependencies(project_dir, offline_only=True)
        if problem is not None:
            print(f"uv.lock not refreshed offline ({problem}): run `uv lock` in the service.")
        return 0
    if not env_written:
        print("Kept the existing .env and its secrets (delete it to generate new ones).")
    print(record_template(project_dir, context))
    print(next_steps(context, lock_dependencies(project_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The hooks' exact words and calls: what the template's mutation gate found unchecked.

Each test here kills mutants that survived tests/test_hooks.py (a message reworded, an
argument dropped, a branch's condition widened); see mutation.toml and the README's
"Mutation testing".
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hooks import post_gen_project as post
from hooks import pre_gen_project as pre
from tests.helpers import context_of
from tests.test_hooks import git_repo


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"project_name": " "}, "project_name is empty: give the service a name."),
        ({"description": "two\nlines"}, "description must be a single line."),
        (
            {"project_slug": "My-Service"},
            "project_slug 'My-Service' is not lowercase kebab-case "
            "(letters, digits and single hyphens, starting with a letter).",
        ),
        (
            {"package_name": "My"},
            "package_name 'My' is not a lowercase Python identifier "
            "(a-z, 0-9 and _, starting with a letter).",
        ),
        (
            {"license": "GPL"},
            "license 'GPL' is not one of: MIT, Apache-2.0, BSD-3-Clause, Proprietary.",
        ),
        (
            {"include_example_api": True, "use_postgres": False},
            "include_example_api=true needs use_postgres=true: the example resource "
            "is stored in PostgreSQL.",
        ),
        (
            {"use_worker": True, "use_redis": False},
            "use_worker=true needs use_redis=true: the jobs are queued in a Redis stream.",
        ),
        (
            {"use_redis": False},
            "use_rate_limit=true needs use_redis=true: the limits are counted in Redis, "
            "shared by every worker and replica.",
        ),
    ],
)
def test_each_refusal_reads_as_written(answers: dict[str, object], message: str) -> None:
    with pytest.raises(pre.ValidationError) as raised:
        pre.validate(context_of(**answers))
    assert str(raised.value) == message


def test_names_of_exactly_the_maximum_length_are_accepted() -> None:
    pre.validate_project_name("a" * pre.MAX_PROJECT_NAME)
    pre.validate_package_name("a" * pre.MAX_PACKAGE_NAME)
    with pytest.raises(pre.ValidationError, match="longer than"):
        pre.validate_project_name("a" * (pre.MAX_PROJECT_NAME + 1))
    with pytest.raises(pre.ValidationError, match="longer than"):
        pre.validate_package_name("a" * (pre.MAX_PACKAGE_NAME + 1))


def test_a_version_longer_than_the_room_kept_for_tags_is_what_must_fit() -> None:
    version = "1.2.3.dev12345678901"
    assert len(version) > pre.RELEASE_TAG_ROOM
    # Room for a tag of RELEASE_TAG_ROOM characters, not for this version.
    slug = "a" * (pre.JOB_NAME_LIMIT - len("-migrate-") - pre.RELEASE_TAG_ROOM)
    with pytest.raises(pre.ValidationError, match=f"with a tag of {len(version)};"):
        pre.validate_kubernetes_names(context_of(project_slug=slug, version=version))


def test_default_secrets_are_32_random_bytes_in_url_safe_base64() -> None:
    secret = post.generate_secrets("POSTGRES_PASSWORD=change-me").strip().partition("=")[2]
    assert len(secret) == 43
    assert secret.replace("-", "").replace("_", "").isalnum()


def test_only_the_secret_variables_and_the_urls_holding_them_change() -> None:
    example = (
        "OTHER=change-me\n"
        "POSTGRES_PASSWORD=change-me\n"
        "DATABASE_URL=postgresql://app:change-me@db/app?sslmode=disable\n"
    )
    env = post.generate_secrets(example, token=lambda: "s3")
    assert env.splitlines() == [
        "OTHER=change-me",
        "POSTGRES_PASSWORD=s3",
        "DATABASE_URL=postgresql://app:s3@db/app?sslmode=disable",
    ]


def test_uv_error_without_an_error_line_is_the_last_line() -> None:
    assert post.uv_error("first\nsecond\nthird\n") == "third"


def fake_run(calls: list[tuple[list[str], dict[str, Any]]], outcomes: list[object]) -> Any:
    """A subprocess.run that records its calls and plays the outcomes in turn."""

    def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        calls.append((command, options))
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, subprocess.CompletedProcess)
        return outcome

    return run


def test_lock_dependencies_runs_uv_in_the_project_and_says_why_it_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: "/bin/uv" if name == "uv" else None)
    calls: list[tuple[list[str], dict[str, Any]]] = []
    online, offline = post.lock_commands()
    outcomes: list[object] = [
        subprocess.TimeoutExpired(online, post.UV_LOCK_TIMEOUT_SECONDS),
        subprocess.CompletedProcess(offline, 2, "", "error: no cache\n"),
    ]
    monkeypatch.setattr(subprocess, "run", fake_run(calls, outcomes))
    assert post.lock_dependencies(tmp_path) == "error: no cache"
    options = {
        "cwd": tmp_path,
        "capture_output": True,
        "text": True,
        "timeout": post.UV_LOCK_TIMEOUT_SECONDS,
        "check": False,
    }
    assert calls == [(online, options), (offline, options)]


def test_lock_dependencies_without_uv_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert post.lock_dependencies(tmp_path) == "uv is not on PATH"


def test_git_output_is_none_when_git_fails_and_never_waits_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, Any]]] = []
    failed = subprocess.CompletedProcess(["git"], 128, "partial\n", "fatal: not a repo\n")
    monkeypatch.setattr(subprocess, "run", fake_run(calls, [failed]))
    assert post.git_output(["status"], tmp_path) is None
    options = {"cwd": tmp_path, "capture_output": True, "text": True, "timeout": 30, "check": False}
    assert calls == [(["git", "status"], options)]


def run_post_main(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    context: dict[str, object],
    lock_problem: str | None = None,
) -> list[tuple[Path, bool]]:
    """main() in a bare project (which may hold files already); how it locked."""
    project.mkdir(exist_ok=True)
    (project / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    monkeypatch.chdir(project)
    monkeypatch.setattr(post, "_RENDERED", json.dumps(context))
    locks: list[tuple[Path, bool]] = []

    def lock(directory: Path, offline_only: bool = False) -> str | None:
        locks.append((directory, offline_only))
        return lock_problem

    monkeypatch.setattr(post, "lock_dependencies", lock)
    assert post.main() == 0
    return locks


def test_main_writes_the_local_clusters_secrets_like_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = tmp_path / f"{post.LOCAL_CLUSTER_SECRETS}.example"
    example.parent.mkdir(parents=True)
    example.write_text("REDIS_PASSWORD=change-me\n")
    run_post_main(tmp_path, monkeypatch, {**context_of(), "_repo_dir": None})
    written = (tmp_path / post.LOCAL_CLUSTER_SECRETS).read_text()
    assert written.startswith("REDIS_PASSWORD=")
    assert "change-me" not in written


def test_main_under_cruft_says_one_line_only_when_the_offline_lock_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    context = {**context_of(), "_commit": "0" * 40}
    assert run_post_main(tmp_path / "a", monkeypatch, context) == [(tmp_path / "a", True)]
    assert capsys.readouterr().out == ""
    run_post_main(tmp_path / "b", monkeypatch, context, lock_problem="error: no cache")
    assert capsys.readouterr().out == (
        "uv.lock not refreshed offline (error: no cache): run `uv lock` in the service.\n"
    )


def test_main_says_when_it_kept_an_existing_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = "Kept the existing .env and its secrets (delete it to generate new ones).\n"
    context = {**context_of(), "_repo_dir": None}
    assert run_post_main(tmp_path, monkeypatch, context) == [(tmp_path, False)]
    first = capsys.readouterr().out
    assert kept not in first
    # Then what record_template() and next_steps() said, in that order.
    assert first == (
        f"{post.record_template(tmp_path, context)}\n{post.next_steps(context, None)}\n"
    )
    run_post_main(tmp_path, monkeypatch, context)
    assert capsys.readouterr().out.startswith(kept)


def test_record_template_says_what_it_did_in_words(tmp_path: Path) -> None:
    (tmp_path / ".cruft.json").write_text("{}\n")
    assert post.record_template(tmp_path, context_of()) == "Kept the existing .cruft.json."
    elsewhere = tmp_path / "service"
    elsewhere.mkdir()
    assert post.record_template(elsewhere, {**context_of(), "_repo_dir": None}) == (
        "The template is not a git checkout, so no .cruft.json was written: "
        "run `cruft link <template-url>` in the service to enable `cruft update`."
    )


def test_the_cruft_file_is_indented_json_with_answers_as_typed(tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "tpl")
    template = str(tmp_path / "tpl")
    service = tmp_path / "service"
    service.mkdir()
    context = {**context_of(project_name="Café API"), "_template": template, "_repo_dir": template}
    message = post.record_template(service, context)
    assert message == f"Recorded the template and answers in .cruft.json ({commit[:12]})."
    text = (service / ".cruft.json").read_text()
    assert '\n  "template": ' in text
    assert '"project_name": "Café API"' in text
    (tmp_path / "tpl" / "cookiecutter.json").write_text('{"changed": true}')
    (service / ".cruft.json").unlink()
    assert post.record_template(service, context) == (
        f"Recorded the template and answers in .cruft.json ({commit[:12]}). "
        "The template had uncommitted changes, which no commit records."
    )


def test_cruft_state_is_exactly_what_cruft_writes() -> None:
    context = {"project_name": "x", "_repo_dir": "/tmp/x"}
    origin = {"template": "https://example.com/t.git", "commit": "c0ffee", "directory": "sub"}
    assert post.cruft_state(context, origin) == {
        "template": "https://example.com/t.git",
        "commit": "c0ffee",
        "checkout": None,
        "context": {
            "cookiecutter": {
                "project_name": "x",
                "_template": "https://example.com/t.git",
                "_commit": "c0ffee",
            }
        },
        "directory": "sub",
    }


def test_a_checkout_without_a_commit_cannot_be_recorded(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "--quiet"], cwd=tmp_path, check=True)
    context = {**context_of(), "_template": str(tmp_path), "_repo_dir": str(tmp_path)}
    assert post.template_origin(context) is None


def test_a_template_in_a_subdirectory_records_it(tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "repo")
    (tmp_path / "repo" / "templates" / "api").mkdir(parents=True)
    repo_dir = str(tmp_path / "repo" / "templates" / "api")
    # Without _template (never missing from cookiecutter's context): recorded by path.
    context = {**context_of(), "_repo_dir": repo_dir}
    assert post.template_origin(context) == {
        "template": str((tmp_path / "repo").resolve()),
        "commit": commit,
        "directory": "templates/api",
    }


def test_next_steps_read_as_written() -> None:
    assert post.next_steps(context_of(), lock_problem=None) == "\n".join(
        [
            "",
            "Created my-service. Next:",
            "  cd my-service",
            "  git init && git add -A && git commit -m 'Initial commit'",
            "  uv run pre-commit install         # lint, format and type-check on every commit",
            "  docker compose up --build        # app on http://localhost:8000/health/dependencies",
            "  uv sync && uv run pytest         # tests (see README.md for the backing services)",
        ]
    )

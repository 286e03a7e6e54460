"""Unit tests of the hook functions, imported directly (no bake)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from hooks import post_gen_project as post
from hooks import pre_gen_project as pre
from tests.helpers import context_of


@pytest.mark.parametrize("slug", ["api", "my-service", "a1-b2-c3"])
def test_valid_slugs_pass(slug: str) -> None:
    pre.validate_slug(slug)


@pytest.mark.parametrize(
    "slug", ["", "My-Service", "my_service", "-svc", "svc-", "a--b", "1svc", "svc\n"]
)
def test_invalid_slugs_are_named(slug: str) -> None:
    with pytest.raises(pre.ValidationError, match="project_slug"):
        pre.validate_slug(slug)


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("class", "keyword"),
        ("match", "keyword"),
        ("typing", "standard library"),
        ("test", "standard library"),
        ("fastapi", "depends on"),
        ("redis", "depends on"),
        ("alembic", "depends on"),
        ("My_Pkg", "identifier"),
        ("pkg-name", "identifier"),
        ("café", "identifier"),
        ("a" * 41, "longer than"),
    ],
)
def test_invalid_package_names_are_named_with_the_rule(name: str, rule: str) -> None:
    with pytest.raises(pre.ValidationError, match=rule) as caught:
        pre.validate_package_name(name)
    assert "package_name" in str(caught.value)


@pytest.mark.parametrize("email", ["jane@example.com", "a.b+c@mail.example.org"])
def test_valid_emails_pass(email: str) -> None:
    pre.validate_email(email)


@pytest.mark.parametrize(
    "email", ["jane", "jane@", "@example.com", "jane@localhost", "a b@c.d", 'a"b@c.d', "a@b.cd\n"]
)
def test_invalid_emails_are_refused(email: str) -> None:
    with pytest.raises(pre.ValidationError, match="author_email"):
        pre.validate_email(email)


def test_unknown_choice_is_refused() -> None:
    with pytest.raises(pre.ValidationError, match="postgres_version '9'"):
        pre.validate(context_of(postgres_version="9"))


def test_example_api_without_postgres_is_refused() -> None:
    with pytest.raises(pre.ValidationError, match="include_example_api"):
        pre.validate(context_of(use_postgres=False, include_example_api=True))


def test_rate_limits_without_redis_are_refused() -> None:
    with pytest.raises(pre.ValidationError, match="use_rate_limit=true needs use_redis=true"):
        pre.validate(context_of(use_redis=False))
    pre.validate(context_of(use_redis=False, use_rate_limit=False))
    pre.validate(context_of(use_rate_limit=False))


def test_a_slug_that_leaves_no_room_for_the_migration_jobs_tag_is_refused() -> None:
    longest = 63 - len("-migrate-") - pre.RELEASE_TAG_ROOM
    pre.validate(context_of(project_slug="a" * longest))
    with pytest.raises(pre.ValidationError, match=f"shorten it to {longest} characters"):
        pre.validate(context_of(project_slug="a" * (longest + 1)))
    # Without the Job, only the general limit applies.
    pre.validate(context_of(project_slug="a" * 60, use_kubernetes=False))
    pre.validate(context_of(project_slug="a" * 60, use_postgres=False, include_example_api=False))


def test_defaults_are_valid() -> None:
    pre.validate(context_of())


def test_paths_to_remove_follow_the_choices() -> None:
    removed = post.paths_to_remove(context_of(use_redis=False, server="uvicorn", ci="gitlab"))
    assert "src/my_service/cache.py" in removed
    assert "gunicorn.conf.py" in removed
    assert ".github" in removed
    assert ".gitlab-ci.yml" not in removed
    assert "src/my_service/db.py" not in removed


def test_a_path_kept_by_a_chosen_value_is_not_removed() -> None:
    # The example migration belongs to the example API; migrations/ to Postgres.
    removed = post.paths_to_remove(context_of(include_example_api=False))
    assert "migrations/versions/0001_create_items.py" in removed
    assert "migrations" not in removed


@pytest.mark.parametrize(
    ("metrics", "postgres", "kept"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
def test_a_path_owned_by_two_values_needs_both(metrics: bool, postgres: bool, kept: bool) -> None:
    manifest: dict[tuple[str, object], tuple[str, ...]] = {
        ("use_metrics", True): ("tests/test_metrics.py", "tests/test_metrics_db.py"),
        ("use_postgres", True): ("src/{package}/db.py", "tests/test_metrics_db.py"),
    }
    context = context_of(use_metrics=metrics, use_postgres=postgres)
    removed = post.paths_to_remove(context, manifest)
    assert ("tests/test_metrics_db.py" not in removed) is kept
    assert ("tests/test_metrics.py" not in removed) is metrics
    assert ("src/my_service/db.py" not in removed) is postgres


def test_remove_paths_deletes_files_and_trees(tmp_path: Path) -> None:
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "f").write_text("x")
    (tmp_path / "file").write_text("x")
    post.remove_paths(tmp_path, ["tree", "file", "absent"])
    assert list(tmp_path.iterdir()) == []


def test_generate_secrets_replaces_placeholders_and_urls() -> None:
    example = "\n".join(
        [
            "# comment mentioning change-me stays",
            "POSTGRES_PASSWORD=change-me",
            "DATABASE_URL=postgresql+asyncpg://app:change-me@localhost:5432/app",
            "REDIS_PASSWORD=change-me",
            "REDIS_URL=redis://:change-me@localhost:6379/0",
            "LOG_LEVEL=INFO",
        ]
    )
    tokens = iter(["p1", "r1"])
    env = post.generate_secrets(example, token=lambda: next(tokens))
    assert env.splitlines() == [
        "# comment mentioning change-me stays",
        "POSTGRES_PASSWORD=p1",
        "DATABASE_URL=postgresql+asyncpg://app:p1@localhost:5432/app",
        "REDIS_PASSWORD=r1",
        "REDIS_URL=redis://:r1@localhost:6379/0",
        "LOG_LEVEL=INFO",
    ]


def test_generated_secrets_are_random_and_long() -> None:
    first = post.generate_secrets("POSTGRES_PASSWORD=change-me")
    second = post.generate_secrets("POSTGRES_PASSWORD=change-me")
    assert first != second
    assert len(first.strip().partition("=")[2]) >= 40


def test_next_steps_name_the_lock_command_and_the_reason_when_locking_failed() -> None:
    failed = post.next_steps(context_of(), lock_problem="no interpreter for >=3.14")
    assert "uv lock" in failed
    assert "no interpreter for >=3.14" in failed
    assert "uv lock " not in post.next_steps(context_of(), lock_problem=None)


def test_lock_is_skipped_without_uv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("shutil.which", lambda _: None)
    assert post.lock_dependencies(tmp_path) == "uv is not on PATH"


def test_lock_falls_back_to_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        return subprocess.CompletedProcess(command, 0 if "--offline" in command else 2, "", "")

    monkeypatch.setattr("shutil.which", lambda _: "/usr/bin/uv")
    monkeypatch.setattr("subprocess.run", fake_run)
    assert post.lock_dependencies(tmp_path) is None
    assert calls == [["uv", "lock"], ["uv", "lock", "--offline"]]


def test_lock_reports_failure_when_both_attempts_fail(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda _: "/usr/bin/uv")
    monkeypatch.setattr(
        "subprocess.run",
        lambda command, **_: subprocess.CompletedProcess(command, 1, "", "error: offline\n"),
    )
    assert post.lock_dependencies(tmp_path) == "error: offline"


def test_env_is_private_from_the_start(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    post.write_env(tmp_path)
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert "change-me" not in (tmp_path / ".env").read_text()


def test_an_existing_env_is_kept_byte_for_byte(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    (tmp_path / ".env").write_text("SECRET_KEY=already-in-use\n")
    assert post.write_env(tmp_path) is False
    assert (tmp_path / ".env").read_text() == "SECRET_KEY=already-in-use\n"


def test_a_new_env_is_reported_as_written(tmp_path: Path) -> None:
    (tmp_path / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    assert post.write_env(tmp_path) is True


def test_cruft_renders_are_told_apart_by_the_commit_cruft_adds() -> None:
    assert post.rendered_by_cruft({**context_of(), "_commit": "abc"})
    assert not post.rendered_by_cruft({**context_of(), "_template": "gh:org/fastapi-docker"})


def test_cruft_renders_lock_offline_only() -> None:
    assert post.lock_commands(offline_only=True) == [["uv", "lock", "--offline"]]
    assert post.lock_commands()[0] == ["uv", "lock"]


def test_uv_error_prefers_the_error_line_over_its_causes() -> None:
    stderr = "Using CPython 3.13\nerror: Failed to fetch index\n  Caused by: dns error\n"
    assert post.uv_error(stderr) == "error: Failed to fetch index"
    assert post.uv_error("something odd\nlast words\n") == "last words"
    assert post.uv_error("") is None


def git_repo(path: Path, origin: str | None = None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cookiecutter.json").write_text("{}")
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "PATH": os.environ["PATH"],
    }
    for command in (
        ["git", "init", "--quiet"],
        ["git", "add", "-A"],
        ["git", "commit", "--quiet", "-m", "A"],
        *([["git", "remote", "add", "origin", origin]] if origin else []),
    ):
        subprocess.run(command, cwd=path, env=env, check=True, capture_output=True)
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_local_template_is_recorded_by_path_and_commit(tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "tpl")
    template = str(tmp_path / "tpl")
    context = {**context_of(), "_template": template, "_repo_dir": template}
    assert post.template_origin(context) == {
        "template": str((tmp_path / "tpl").resolve()),
        "commit": commit,
        "directory": None,
    }


def test_an_abbreviated_template_is_recorded_by_its_clone_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cookiecutter cloned gh:org/fastapi-docker into its own directory.
    monkeypatch.chdir(tmp_path)
    url = "https://github.com/org/fastapi-docker.git"
    git_repo(tmp_path / "clones" / "fastapi-docker", origin=url)
    context = {
        **context_of(),
        "_template": "gh:org/fastapi-docker",
        "_repo_dir": str(tmp_path / "clones" / "fastapi-docker"),
    }
    origin = post.template_origin(context)
    assert origin is not None
    assert origin["template"] == url


def test_a_template_outside_git_cannot_be_recorded(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    context = {**context_of(), "_template": str(tmp_path), "_repo_dir": str(tmp_path / "tpl")}
    assert post.template_origin(context) is None
    message = post.record_template(tmp_path, {**context_of(), "_repo_dir": None})
    assert "cruft link" in message
    assert not (tmp_path / ".cruft.json").exists()


def test_cruft_state_has_the_answers_and_no_machine_paths() -> None:
    context = {**context_of(), "_output_dir": "/home/me", "_repo_dir": "/tmp/x", "_checkout": None}
    origin = {"template": "https://example.com/t.git", "commit": "c0ffee", "directory": None}
    state = post.cruft_state(context, origin)
    answers = state["context"]["cookiecutter"]
    assert state["template"] == answers["_template"] == "https://example.com/t.git"
    assert state["commit"] == answers["_commit"] == "c0ffee"
    assert answers["project_slug"] == "my-service"
    assert not {"_output_dir", "_repo_dir", "_checkout"} & set(answers)


def test_an_existing_cruft_file_is_kept(tmp_path: Path) -> None:
    (tmp_path / ".cruft.json").write_text("{}\n")
    assert "Kept" in post.record_template(tmp_path, context_of())
    assert (tmp_path / ".cruft.json").read_text() == "{}\n"


def test_a_dirty_template_checkout_is_recorded_with_a_warning(tmp_path: Path) -> None:
    commit = git_repo(tmp_path / "tpl")
    (tmp_path / "tpl" / "cookiecutter.json").write_text('{"changed": true}')
    template = str(tmp_path / "tpl")
    service = tmp_path / "service"
    service.mkdir()
    context = {**context_of(), "_template": template, "_repo_dir": template}
    message = post.record_template(service, context)
    assert "uncommitted changes" in message
    assert json.loads((service / ".cruft.json").read_text())["commit"] == commit


def run_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, context: dict[str, object]
) -> list[list[str]]:
    """main() as cookiecutter runs it, in a bare project; the uv commands it ran."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    monkeypatch.chdir(project)
    monkeypatch.setattr(post, "_RENDERED", json.dumps(context))
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    commands: list[list[str]] = []

    def fake_run(command: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert post.main() == 0
    return [c for c in commands if c[:1] == ["uv"]]


def test_main_under_cruft_locks_offline_only_and_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cruft's renders carry _commit; they run twice per update and must not wait on
    # the network, and cruft writes .cruft.json itself.
    context = {**context_of(), "_commit": "0" * 40, "_output_dir": str(tmp_path)}
    commands = run_main(tmp_path, monkeypatch, context)
    assert commands == [["uv", "lock", "--offline"]]
    assert not (tmp_path / "project" / ".cruft.json").exists()
    assert (tmp_path / "project" / ".env").exists()


def test_main_for_a_plain_bake_locks_online_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = {**context_of(), "_output_dir": str(tmp_path), "_repo_dir": str(tmp_path)}
    commands = run_main(tmp_path, monkeypatch, context)
    assert commands == [["uv", "lock"]]

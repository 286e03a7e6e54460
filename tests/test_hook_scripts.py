"""The hooks as cookiecutter runs them: ``main()`` of each, with the rendered answers.

Bakes run the hooks in a subprocess, where the template's coverage does not
reach; these tests run the same entry points in-process, so the report on
``hooks/`` counts them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from hooks import post_gen_project as post
from hooks import pre_gen_project as pre
from tests.helpers import context_of


def test_pre_hook_accepts_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pre, "_RENDERED", json.dumps(context_of()))
    assert pre.main() == 0


def test_pre_hook_refuses_with_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(pre, "_RENDERED", json.dumps(context_of(version="one")))
    assert pre.main() == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ERROR: version 'one'")


@pytest.mark.parametrize(
    ("answers", "named"),
    [
        ({"project_name": "  "}, "project_name is empty"),
        ({"project_name": "!!!"}, "no letter or digit"),
        ({"project_name": "x" * 200}, "project_name"),
        ({"description": "two\nlines"}, "description must be a single line"),
        ({"description": "two\rlines"}, "description must be a single line"),
        ({"project_slug": "a" * 200}, "project_slug"),
        ({"version": "v1"}, "PEP 440"),
    ],
)
def test_each_rule_names_the_answer(answers: dict[str, str], named: str) -> None:
    with pytest.raises(pre.ValidationError, match=named):
        pre.validate(context_of(**answers))


def test_post_hook_prunes_writes_secrets_and_says_what_is_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    context = context_of(use_redis=False)
    (tmp_path / "src" / "my_service").mkdir(parents=True)
    (tmp_path / "src" / "my_service" / "cache.py").write_text("")
    (tmp_path / "src" / "my_service" / "db.py").write_text("")
    (tmp_path / ".env.example").write_text("POSTGRES_PASSWORD=change-me\n")
    monkeypatch.setattr(post, "_RENDERED", json.dumps(context))
    monkeypatch.setattr(post, "lock_dependencies", lambda project: None)
    monkeypatch.chdir(tmp_path)
    assert post.main() == 0
    assert not (tmp_path / "src" / "my_service" / "cache.py").exists()
    assert (tmp_path / "src" / "my_service" / "db.py").exists()
    assert "change-me" not in (tmp_path / ".env").read_text()
    assert "Created my-service." in capsys.readouterr().out


def test_a_lock_that_times_out_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def slow_run(command: list[str], **options: object) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(command, post.UV_LOCK_TIMEOUT_SECONDS)

    monkeypatch.setattr("shutil.which", lambda _: "/usr/bin/uv")
    monkeypatch.setattr("subprocess.run", slow_run)
    reason = post.lock_dependencies(tmp_path)
    assert reason == f"`uv lock --offline` took over {post.UV_LOCK_TIMEOUT_SECONDS} s"


def test_a_lock_failure_without_output_gives_the_exit_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("shutil.which", lambda _: "/usr/bin/uv")
    monkeypatch.setattr(
        "subprocess.run", lambda command, **_: subprocess.CompletedProcess(command, 3, "", "")
    )
    assert post.lock_dependencies(tmp_path) == "exit status 3"

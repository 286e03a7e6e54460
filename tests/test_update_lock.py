"""scripts/update_lock.py: the shipped lock is the default bake's, with its identity templated.

The bake and `uv lock --upgrade` are stood in for: what is checked is what the script
asks of them and what it writes back.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from scripts import update_lock
from tests.helpers import defaults

ANSWERS = {"project_slug": "my-service", "version": "0.1.0"}
OWN_ENTRY = 'name = "my-service"\nversion = "0.1.0"'
TEMPLATED = 'name = "{{ cookiecutter.project_slug }}"\nversion = "{{ cookiecutter.version }}"'
# Another package of the same version, and one named like the service at another version.
OTHERS = 'name = "anyio"\nversion = "0.1.0"\n\n[[package]]\nname = "my-service"\nversion = "2.0"'


def test_only_the_services_own_entry_is_templated() -> None:
    lock = f'[[package]]\n{OWN_ENTRY}\nsource = {{ editable = "." }}\n\n[[package]]\n{OTHERS}\n'
    assert update_lock.templated(lock, ANSWERS) == lock.replace(OWN_ENTRY, TEMPLATED, 1)


def test_names_are_matched_literally_not_as_patterns() -> None:
    answers = {"project_slug": "a.b", "version": "1+x"}
    lock = 'name = "a.b"\nversion = "1+x"\n'
    assert update_lock.templated(lock, answers) == TEMPLATED + "\n"
    with pytest.raises(SystemExit):
        update_lock.templated('name = "aXb"\nversion = "1+x"\n', answers)


@pytest.mark.parametrize(
    "lock",
    [
        "",
        # Part of a line is not the entry: each line matches whole.
        f"x{OWN_ENTRY}\n",
        f"{OWN_ENTRY}x\n",
        # Twice is as wrong as never.
        f"{OWN_ENTRY}\n\n{OWN_ENTRY}\n",
    ],
)
def test_a_lock_without_exactly_one_own_entry_is_refused(lock: str) -> None:
    with pytest.raises(SystemExit) as raised:
        update_lock.templated(lock, ANSWERS)
    assert raised.value.code == "could not find the project's own entry in uv.lock"


@pytest.mark.parametrize(
    ("argv", "lock"),
    [([], ["uv", "lock", "--upgrade"]), (["--keep-versions"], ["uv", "lock"])],
)
def test_main_writes_the_lock_of_a_default_bake_into_the_template(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    lock: list[str],
) -> None:
    answers = defaults()
    own = f'name = "{answers["project_slug"]}"\nversion = "{answers["version"]}"'
    baked_into: list[Path] = []
    commands: list[tuple[list[str], dict[str, Any]]] = []

    def bake(output_dir: Path) -> Path:
        baked_into.append(output_dir)
        project = output_dir / "project"
        project.mkdir()
        return project

    def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        commands.append((command, options))
        (options["cwd"] / "uv.lock").write_text(f"version = 1\n\n[[package]]\n{own}\n")
        return subprocess.CompletedProcess(command, 0)

    template = tmp_path / "template"
    template.mkdir()
    monkeypatch.setattr(update_lock, "bake", bake)
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.setattr(update_lock, "TEMPLATE_PROJECT", template)
    assert update_lock.main(argv) == 0
    (project,) = [directory / "project" for directory in baked_into]
    assert commands == [(lock, {"cwd": project, "check": True})]
    assert (template / "uv.lock").read_text() == f"version = 1\n\n[[package]]\n{TEMPLATED}\n"
    assert not project.exists(), "the bake is temporary"
    assert capsys.readouterr().out == f"wrote {template / 'uv.lock'}\n"


def test_help_says_what_the_script_and_its_option_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        update_lock.main(["--help"])
    assert raised.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "Refresh the uv.lock that ships with the template (for the default answers)." in shown
    assert "--keep-versions lock what pyproject.toml added, upgrade nothing else" in shown

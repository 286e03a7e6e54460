"""Refresh the uv.lock that ships with the template (for the default answers).

Bakes the default project, re-resolves its lock to the newest versions
(``uv lock --upgrade``), and writes it back with the project's own name and
version turned into template variables (the Python floor stays the default's:
see templated()). Run it, then the template's tests, before a release:

    uv run python scripts/update_lock.py && uv run pytest

After adding a dependency to the template's pyproject.toml between releases,
``--keep-versions`` locks it without upgrading anything else (``uv lock``).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers import TEMPLATE_PROJECT, bake, defaults  # noqa: E402


def templated(lock: str, answers: dict[str, str]) -> str:
    """Replace the baked project's identity in the lock with Jinja variables."""
    slug, version = answers["project_slug"], answers["version"]
    # The Python floor stays the default's: the wheels in the lock are those of
    # that floor and up. A bake for another Python then differs from the lock,
    # so the hook's `uv lock` re-resolves and records that Python's wheels; a
    # templated floor would make the lock look current without them, and
    # `uv sync` would build pydantic-core and uvloop from source.
    pattern = re.compile(
        rf'^name = "{re.escape(slug)}"\nversion = "{re.escape(version)}"$', re.MULTILINE
    )
    lock, count = pattern.subn(
        'name = "{{ cookiecutter.project_slug }}"\nversion = "{{ cookiecutter.version }}"', lock
    )
    if count != 1:
        raise SystemExit("could not find the project's own entry in uv.lock")
    return lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--keep-versions",
        action="store_true",
        help="lock what pyproject.toml added, upgrade nothing else",
    )
    arguments = parser.parse_args(argv)
    answers = defaults()
    # The bake carries the shipped lock, whose versions plain `uv lock` keeps.
    command = ["uv", "lock"] if arguments.keep_versions else ["uv", "lock", "--upgrade"]
    with tempfile.TemporaryDirectory() as tmp:
        project = bake(Path(tmp))
        subprocess.run(command, cwd=project, check=True)
        lock = (project / "uv.lock").read_text()
    (TEMPLATE_PROJECT / "uv.lock").write_text(templated(lock, answers))
    print(f"wrote {TEMPLATE_PROJECT / 'uv.lock'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

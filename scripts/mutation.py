"""The template's mutation gate: ``uv run python scripts/mutation.py``.

The generated services' command (their ``tests/mutation.py``) with the same rules, run
over the hooks and the lock script with this repository's ``[tool.mutmut]``
(pyproject.toml) and ``mutation.toml``: one gate, written once.
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GATE = ROOT / "{{cookiecutter.project_slug}}" / "tests" / "mutation.py"

if __name__ == "__main__":
    os.chdir(ROOT)
    runpy.run_path(str(GATE), run_name="__main__")

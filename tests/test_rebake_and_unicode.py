"""Answers outside the Basic Multilingual Plane, and baking over an existing service."""

from __future__ import annotations

import ast
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR, VARIANTS, bake, run

pytestmark = pytest.mark.xdist_group("rebake")


def test_emoji_answers_give_valid_toml_and_python(tmp_path: Path) -> None:
    project = bake(
        tmp_path,
        **VARIANTS["all-off"],
        project_name="Rocket 🚀 API",
        description="Launches 🚀 things, 🦄 fast.",
        author_name="Zoë 👩‍🚀 Doe",
    )
    assert project.name == "rocket-api"
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == "Launches 🚀 things, 🦄 fast."
    assert pyproject["project"]["authors"][0]["name"] == "Zoë 👩‍🚀 Doe"
    main = (project / "src" / "rocket_api" / "main.py").read_text()
    titles = [
        keyword.value
        for node in ast.walk(ast.parse(main))
        if isinstance(node, ast.Call)
        for keyword in node.keywords
        if keyword.arg == "title"
    ]
    assert [ast.literal_eval(title) for title in titles] == ["Rocket 🚀 API"]
    # The title ends up in /openapi.json: it must encode as UTF-8 (a lone
    # surrogate would not, and the endpoint would answer 500).
    assert "Rocket 🚀 API".encode() in main.encode("utf-8")


def test_rebaking_over_a_service_keeps_its_env(tmp_path: Path) -> None:
    arguments = [
        sys.executable, "-m", "cookiecutter", "--no-input", "--output-dir", str(tmp_path),
        str(TEMPLATE_DIR), "ci=none",
    ]  # fmt: skip
    run(arguments, tmp_path)
    env = tmp_path / "my-service" / ".env"
    env.write_text(env.read_text() + "# the service's own line\n")
    before = env.read_bytes()
    result = run([*arguments[:3], "--overwrite-if-exists", *arguments[3:]], tmp_path)
    assert "Traceback" not in result.stderr
    assert "Kept the existing .env" in result.stdout
    assert env.read_bytes() == before

"""Bad answers are refused with a line naming the value and the rule, leaving nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR, bake

# (answers, text the error line must contain)
INVALID = [
    ({"project_name": ""}, "project_name is empty"),
    ({"project_name": "!!!"}, "has no letter or digit"),
    ({"project_name": "x" * 61}, "longer than 60"),
    ({"project_slug": "My Service"}, "project_slug 'My Service' is not lowercase kebab-case"),
    ({"project_slug": "my_service"}, "project_slug 'my_service' is not lowercase kebab-case"),
    ({"package_name": "class"}, "package_name 'class' is a Python keyword"),
    ({"package_name": "typing"}, "package_name 'typing' would shadow the standard library"),
    ({"package_name": "test"}, "package_name 'test' would shadow the standard library"),
    ({"package_name": "fastapi"}, "package_name 'fastapi' would shadow"),
    ({"package_name": "redis"}, "package_name 'redis' would shadow"),
    ({"package_name": "Bad-Name"}, "package_name 'Bad-Name' is not a lowercase Python identifier"),
    ({"package_name": "naïve"}, "is not a lowercase Python identifier"),
    ({"author_email": "jane.example.com"}, "author_email 'jane.example.com' is not an email"),
    ({"version": "one"}, "version 'one' is not a PEP 440 version"),
    ({"python_version": "3.9"}, "3.9 provided for choice variable python_version"),
    ({"postgres_version": "12"}, "12 provided for choice variable postgres_version"),
    ({"use_redis": "maybe"}, "maybe provided for variable use_redis"),
    (
        {"use_postgres": "false", "include_example_api": "true"},
        "include_example_api=true needs use_postgres=true",
    ),
    ({"use_redis": "false", "use_worker": "true"}, "use_worker=true needs use_redis=true"),
    ({"use_redis": "false"}, "use_rate_limit=true needs use_redis=true"),
]


@pytest.mark.parametrize(("answers", "expected"), INVALID, ids=lambda v: str(v)[:40])
def test_invalid_answers_are_refused_and_leave_nothing(
    tmp_path: Path, answers: dict[str, str], expected: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cookiecutter",
            "--no-input",
            "--output-dir",
            str(out),
            str(TEMPLATE_DIR),
            *(f"{key}={value}" for key, value in answers.items()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    lines = [ln for ln in (result.stdout + result.stderr).splitlines() if expected in ln]
    assert lines, f"no line contains {expected!r}:\n{result.stdout}\n{result.stderr}"
    assert list(out.iterdir()) == [], "a rejected bake must leave no directory"


def test_non_ascii_project_name_gives_ascii_slug_and_package(tmp_path: Path) -> None:
    project = bake(tmp_path, project_name="Café Ünïcode API", ci="none")
    assert project.name == "cafe-unicode-api"
    assert (project / "src" / "cafe_unicode_api" / "main.py").is_file()

"""The template carries a version, and its changelog describes that version."""

from __future__ import annotations

import re
import tomllib

from tests.helpers import TEMPLATE_DIR

HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)


def test_changelog_names_the_template_version_first() -> None:
    version = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text())["project"]["version"]
    released = HEADING.findall((TEMPLATE_DIR / "CHANGELOG.md").read_text())
    assert released[0] == "Unreleased"
    assert released[1] == version, "bump pyproject.toml's version with the changelog"
    assert len(set(released)) == len(released), "a version appears twice"

"""The template's releases, read from its git tags (never from a list kept by hand).

Every release is an annotated tag ``vX.Y.Z`` on this repository (CHANGELOG.md names
each one's commit). A clone without tags (``git clone --no-tags``, a shallow CI
checkout) has no releases to test against, and that fails loudly instead of passing
with nothing tested.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR

TAG = re.compile(r"^v(?P<version>\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class Release:
    version: str
    tag: str
    commit: str

    def key(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))


def git(*args: str, repo: Path = TEMPLATE_DIR) -> str:
    result = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        pytest.fail(f"`git {' '.join(args)}` failed in {repo}: {result.stderr}", pytrace=False)
    return result.stdout


def releases(repo: Path = TEMPLATE_DIR) -> list[Release]:
    """Every ``vX.Y.Z`` tag, oldest first, with the commit it points at."""
    # %(*objectname) is the tagged commit of an annotated tag, empty for a lightweight one.
    listing = git(
        "tag", "--list", "v*", "--format", "%(refname:strip=2) %(objectname) %(*objectname)",
        repo=repo,
    )  # fmt: skip
    found = []
    for line in listing.splitlines():
        tag, _, commits = line.partition(" ")
        match = TAG.match(tag)
        if match:
            own, _, tagged = commits.partition(" ")
            found.append(Release(match["version"], tag, tagged or own))
    if not found:
        pytest.fail(
            f"no release tags (vX.Y.Z) in {repo}: the upgrade and migration tests read the "
            "releases from them; fetch them (`git fetch --tags`) or clone without --no-tags",
            pytrace=False,
        )
    return sorted(found, key=Release.key)


def files_at(release: Release, folder: str, repo: Path = TEMPLATE_DIR) -> list[str]:
    """The paths under ``folder`` in that release's tree."""
    listing = git("ls-tree", "-r", "-z", "--name-only", release.commit, "--", folder, repo=repo)
    return [path for path in listing.split("\0") if path]


def content_at(release: Release, path: str, repo: Path = TEMPLATE_DIR) -> str:
    return git("show", f"{release.commit}:{path}", repo=repo)

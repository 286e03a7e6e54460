"""The template's releases, read from the repository (never from a list kept by hand).

Every release is an annotated tag ``vX.Y.Z`` on this repository, and CHANGELOG.md names
each one's commit ("Tag `vX.Y.Z`, commit `<sha>`."). The tags are the source when the
clone has them. A clone made without tags (``git clone --no-tags``; the project's own CI
clones main that way) still has the history, so the CHANGELOG's commits stand in for
them. A clone that has neither (a shallow checkout) fails loudly instead of passing with
nothing tested.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import TEMPLATE_DIR

TAG = re.compile(r"^v(?P<version>\d+\.\d+\.\d+)$")
# Under each released version's heading in CHANGELOG.md.
RELEASE_LINE = re.compile(
    r"^## \[(?P<version>\d+\.\d+\.\d+)\]\n\n"
    r"Tag `v(?P=version)`, commit `(?P<commit>[0-9a-f]{7,40})`\.$",
    re.MULTILINE,
)


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


def changelog_releases(repo: Path = TEMPLATE_DIR) -> dict[str, str]:
    """Each released version the CHANGELOG names, with the commit (as written) it names."""
    text = (repo / "CHANGELOG.md").read_text()
    return {match["version"]: match["commit"] for match in RELEASE_LINE.finditer(text)}


def tagged_releases(repo: Path = TEMPLATE_DIR) -> list[Release]:
    """Every ``vX.Y.Z`` tag in this clone, with the commit it points at (may be none)."""
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
    return sorted(found, key=Release.key)


def resolve(commit: str, repo: Path = TEMPLATE_DIR) -> str | None:
    """The full name of a commit this clone has, or None (a shallow or foreign clone)."""
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        cwd=repo, capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    return result.stdout.strip() if result.returncode == 0 else None


def releases(repo: Path = TEMPLATE_DIR) -> list[Release]:
    """Every release, oldest first: the tags, or else the CHANGELOG's commits."""
    tagged = tagged_releases(repo)
    if tagged:
        return tagged
    found = []
    for version, commit in changelog_releases(repo).items():
        full = resolve(commit, repo)
        if full is None:
            pytest.fail(
                f"CHANGELOG.md names commit {commit} for v{version}, which {repo} does not "
                "have, and the clone has no release tags: the upgrade and migration tests "
                "need the history (clone without --depth, or `git fetch --unshallow --tags`)",
                pytrace=False,
            )
        found.append(Release(version, f"v{version}", full))
    if not found:
        pytest.fail(f"no release in {repo}: no vX.Y.Z tag and none in CHANGELOG.md", pytrace=False)
    return sorted(found, key=Release.key)


def files_at(release: Release, folder: str, repo: Path = TEMPLATE_DIR) -> list[str]:
    """The paths under ``folder`` in that release's tree."""
    listing = git("ls-tree", "-r", "-z", "--name-only", release.commit, "--", folder, repo=repo)
    return [path for path in listing.split("\0") if path]


def content_at(release: Release, path: str, repo: Path = TEMPLATE_DIR) -> str:
    return git("show", f"{release.commit}:{path}", repo=repo)

"""The template carries a version, and its changelog describes that version."""

from __future__ import annotations

import itertools
import re
import subprocess
import tomllib

import pytest

from tests.helpers import TEMPLATE_DIR, TEMPLATE_PROJECT
from tests.releases import (
    Release,
    changelog_releases,
    content_at,
    files_at,
    releases,
    resolve,
    tagged_releases,
)

HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)


def test_changelog_names_the_template_version_first() -> None:
    version = tomllib.loads((TEMPLATE_DIR / "pyproject.toml").read_text())["project"]["version"]
    released = HEADING.findall((TEMPLATE_DIR / "CHANGELOG.md").read_text())
    assert released[0] == "Unreleased"
    assert released[1] == version, "bump pyproject.toml's version with the changelog"
    assert len(set(released)) == len(released), "a version appears twice"


def test_every_release_names_a_commit_of_this_history() -> None:
    changelog = (TEMPLATE_DIR / "CHANGELOG.md").read_text()
    named = changelog_releases()
    versions = [v for v in HEADING.findall(changelog) if v != "Unreleased"]
    assert sorted(named) == sorted(versions), "a released heading lacks its tag-and-commit line"
    for version, commit in named.items():
        full = resolve(commit)
        assert full is not None, f"v{version}'s commit {commit} is not in this clone"
        ancestor = subprocess.run(
            ["git", "merge-base", "--is-ancestor", full, "HEAD"], cwd=TEMPLATE_DIR, check=False
        )
        assert ancestor.returncode == 0, f"v{version}'s commit {commit} is not in main's history"


def test_every_release_tag_is_on_the_commit_the_changelog_names() -> None:
    tagged = {release.version: release.commit for release in tagged_releases()}
    if not tagged:
        # Not a pass: the tags are checked wherever the clone has them (a developer's
        # clone, the template's GitHub CI with fetch-depth 0); this project's own CI
        # clones main without tags, and the CHANGELOG's commits stand in there.
        pytest.skip("this clone has no tags (cloned with --no-tags): nothing to compare")
    named = changelog_releases()
    assert sorted(tagged) == sorted(named), "a release without its tag, or a tag without an entry"
    for version, commit in named.items():
        assert tagged[version].startswith(commit), f"v{version} is not on {commit}"


REVISIONS = f"{TEMPLATE_PROJECT.name}/migrations/versions"


def released_revisions() -> dict[str, tuple[str, str]]:
    """Each revision file any release shipped: (the first release that did, its text)."""
    first: dict[str, tuple[str, str]] = {}
    for release in releases():
        for path in files_at(release, REVISIONS):
            if path.endswith(".py") and path not in first:
                first[path] = (release.version, content_at(release, path))
    return first


def test_a_released_revision_is_never_changed_nor_removed() -> None:
    # A database that applied a revision never runs it again: an edit reaches new
    # databases only (0.2.0 edited 0001 in place, and every service migrated at 0.1.0
    # disagreed with its models). A change to the schema is a new revision. A removed
    # one leaves databases at a revision Alembic no longer knows.
    released = released_revisions()
    assert released, f"no release shipped a file under {REVISIONS}"
    for path, (version, text) in released.items():
        current = TEMPLATE_DIR / path
        assert current.is_file(), f"{path}, released in {version}, was removed"
        assert current.read_text() == text, (
            f"{path} differs from {version}'s: write a new revision instead"
        )


CONDITIONAL_NAME = re.compile(r"\{%.*?%\}|\{%-.*?-%\}")


def generated_name(source: str) -> str:
    """A template path as the service gets it: {package} for the package directory, a
    name chosen by a condition (LICENSE) as the file it renders to."""
    relative = source.split("/", 1)[1]
    return CONDITIONAL_NAME.sub("", relative.replace("{{cookiecutter.package_name}}", "{package}"))


def generated_files(release: Release | None) -> set[str]:
    """The service's file names at a release, or in this working tree (None)."""
    if release is None:
        sources = [
            path.relative_to(TEMPLATE_DIR).as_posix()
            for path in TEMPLATE_PROJECT.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    else:
        sources = files_at(release, TEMPLATE_PROJECT.name)
    return {generated_name(source) for source in sources}


def test_every_file_a_release_removed_is_in_the_removals_manifest() -> None:
    manifest = tomllib.loads((TEMPLATE_DIR / "removals.toml").read_text())
    recorded = {entry["path"]: entry for entry in manifest.get("removed", [])}
    known = releases()
    steps: list[tuple[Release, Release | None, str]] = [
        (earlier, later, later.version) for earlier, later in itertools.pairwise(known)
    ]
    steps.append((known[-1], None, "Unreleased"))
    expected: set[str] = set()
    for earlier, later, version in steps:
        before, after = generated_files(earlier), generated_files(later)
        for path in sorted(before - after):
            expected.add(path)
            assert path in recorded, f"{path} was removed in {version} without a removals entry"
            assert recorded[path]["release"] == version, path
            moved_to = recorded[path].get("moved_to")
            assert moved_to is None or moved_to in after, f"{path} moved to {moved_to}, not there"
    assert set(recorded) == expected, "an entry names a path no release removed"

"""Follow the template this service was made from (README: "Template updates").

    python3 scripts/template_update.py removals   # after `uvx cruft update`, before committing
    python3 scripts/template_update.py propose --body FILE --outputs FILE   # the scheduled CI job

cruft applies the template's changes as a diff, and a file the service changed
that the template then removed or renamed stays behind (the diff cannot remove
it). ``removals`` reads the template's removals manifest (``removals.toml``,
one entry per removed or renamed path and the release that did it) at the
commit ``.cruft.json`` now records, renders the template at the commit before
the update and at the new one with this service's answers, and for each path
removed between the two: deletes it, or moves it to its new name, when it is
the template's own text; a file the service changed is kept and reported
(exit status 1), never touched.

``propose`` is what the scheduled CI job runs: ``cruft check``; when the
template moved, ``cruft update``, ``removals``, ``uv lock``, and a description
for the pull/merge request that lists every conflict (files left with conflict
markers, and the hunks git could not place, whose ``.rej`` files are removed
so that none is committed unread).

Standard library only: it runs before the service's environment is synced.
cruft comes through ``uvx``, at the version pinned below.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CRUFT = "cruft==2.16.0"
MANIFEST = "removals.toml"


def run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    # Fixed programs (git, uvx, uv) with arguments from the repository, no shell.
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603
    if check and result.returncode != 0:
        sys.exit(f"`{' '.join(args)}` failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Removal:
    path: str
    release: str
    moved_to: str | None


def read_manifest(text: str, package: str) -> list[Removal]:
    """The manifest's entries, with ``{package}`` standing for the package directory."""
    entries = tomllib.loads(text).get("removed", [])
    return [
        Removal(
            path=str(entry["path"]).format(package=package),
            release=str(entry["release"]),
            moved_to=str(entry["moved_to"]).format(package=package)
            if "moved_to" in entry
            else None,
        )
        for entry in entries
    ]


def render(template: Path, state: dict[str, Any], where: Path) -> Path:
    """The template at ``state``'s commit, made with its recorded answers (by ``cruft create``,
    as cruft renders both sides of an update)."""
    # The recorded context has one entry, the answers; keys with "_" are the template's own.
    [answers] = state["context"].values()
    chosen = {key: value for key, value in answers.items() if not key.startswith("_")}
    where.mkdir()
    create = ["uvx", "--from", CRUFT, "cruft", "create", str(template), "--no-input"]
    create += ["--checkout", state["commit"], "--output-dir", str(where)]
    if state.get("directory"):
        create += ["--directory", state["directory"]]
    run([*create, "--extra-context", json.dumps(chosen)], where)
    [project] = where.iterdir()
    return project


def removals(service: Path, since: str) -> tuple[list[str], list[str]]:
    """Apply the manifest between ``since``'s template commit and the current one.

    Returns what was done and what was kept (changed by the service).
    """
    new = json.loads((service / ".cruft.json").read_text())
    old = json.loads(run(["git", "show", f"{since}:.cruft.json"], service).stdout)
    if old["commit"] == new["commit"]:
        return [], []
    done: list[str] = []
    kept: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        template = Path(scratch) / "template"
        run(["git", "clone", "--quiet", new["template"], str(template)], service)
        directory = new.get("directory") or ""
        manifest = f"{new['commit']}:{Path(directory, MANIFEST).as_posix()}"
        shown = run(["git", "show", manifest], template, check=False)
        [answers] = new["context"].values()
        package = answers["package_name"]
        entries = read_manifest(shown.stdout, package) if shown.returncode == 0 else []
        pending = [
            e
            for e in entries
            if (service / e.path).exists() or (e.moved_to and not (service / e.moved_to).exists())
        ]
        if not pending:
            return done, kept
        before = render(template, old, Path(scratch) / "before")
        after = render(template, new, Path(scratch) / "after")
        for entry in pending:
            if not (before / entry.path).is_file() or (after / entry.path).exists():
                continue  # not removed between these two commits
            target = service / entry.path
            renamed = f" (renamed to {entry.moved_to})" if entry.moved_to else ""
            if target.exists() and target.read_bytes() != (before / entry.path).read_bytes():
                kept.append(
                    f"{entry.path}: removed by the template in {entry.release}{renamed}, "
                    "but this service changed it; move what you changed, then delete it"
                )
                continue
            if entry.moved_to and not (service / entry.moved_to).exists():
                (service / entry.moved_to).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(after / entry.moved_to, service / entry.moved_to)
                done.append(f"{entry.moved_to}: added, the template's new name for {entry.path}")
            if target.exists():
                target.unlink()
                done.append(f"{entry.path}: removed, as in the template's {entry.release}{renamed}")
                for parent in target.parents:
                    if parent == service or any(parent.iterdir()):
                        break
                    parent.rmdir()
    return done, kept


def conflicts(service: Path) -> tuple[list[str], dict[str, str]]:
    """Files left with conflict markers, and each ``.rej`` file's hunks (files removed)."""
    unmerged = run(["git", "ls-files", "--unmerged"], service).stdout.splitlines()
    marked = sorted({line.split("\t", 1)[1] for line in unmerged})
    rejected: dict[str, str] = {}
    for reject in sorted(service.rglob("*.rej")):
        if ".git" in reject.relative_to(service).parts:
            continue
        rejected[reject.relative_to(service).with_suffix("").as_posix()] = reject.read_text()
        reject.unlink()
    return marked, rejected


def describe(
    template: str,
    old: str,
    new: str,
    marked: list[str],
    rejected: dict[str, str],
    done: list[str],
    kept: list[str],
    lock: str | None,
    introduced: dict[str, Any],
) -> str:
    lines = [
        f"`cruft update` from the template {template}: `{old[:12]}` -> `{new[:12]}`.",
        "",
        'Before merging: the template\'s CHANGELOG, section "After updating a service" of',
        "each release in between; then `uv sync`, `uv run pre-commit run --all-files`,",
        "`uv run pytest` (this pull request's CI runs them).",
    ]
    if marked or rejected:
        lines += ["", "## Conflicts to resolve by hand", ""]
        lines += [f"- `{path}`: conflict markers, committed as they are" for path in marked]
        for path, hunks in rejected.items():
            lines += [
                f"- `{path}`: these hunks did not apply and are NOT in this branch "
                "(their .rej file was not committed):",
                "",
                "```diff",
                hunks.rstrip(),
                "```",
            ]
    else:
        lines += ["", "No conflicts: every change of the template applied cleanly."]
    if introduced:
        # .cruft.json had no answer for an option the template added, and cruft took its
        # default: a default that changes what the service does must not pass unseen.
        lines += [
            "",
            "## New options, answered with the template's defaults",
            "",
            "The template added these options; `.cruft.json` now records its default for",
            "each (the template's CHANGELOG says what they do). To answer otherwise, on this",
            f"branch: `uvx --from {CRUFT} cruft update --variables-to-update",
            "'{\"<option>\": <value>}'`, then `python3 scripts/template_update.py removals`",
            "and `uv lock` (cruft skips `uv.lock` and `.env`).",
            "",
            *[f"- `{name}`: `{json.dumps(value)}`" for name, value in introduced.items()],
        ]
    if kept:
        lines += ["", "## Removed by the template, kept here because this service changed them"]
        lines += ["", *[f"- {line}" for line in kept]]
    if done:
        lines += ["", "## Removed or moved as the template did", "", *[f"- {x}" for x in done]]
    if lock is not None:
        lines += ["", "## `uv lock` failed: run it by hand", "", "```", lock.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def propose(service: Path, body: Path, outputs: Path) -> int:
    cruft = ["uvx", "--from", CRUFT, "cruft"]
    if run([*cruft, "check"], service, check=False).returncode == 0:
        outputs.write_text("behind=false\n")
        print("The service is up to date with its template.")
        return 0
    state = json.loads((service / ".cruft.json").read_text())
    run([*cruft, "update", "--skip-apply-ask"], service)
    new = json.loads((service / ".cruft.json").read_text())
    if new["commit"] == state["commit"]:
        sys.exit("cruft update applied nothing (see its output above)")
    marked, rejected = conflicts(service)
    done, kept = removals(service, "HEAD")
    locked = run(["uv", "lock"], service, check=False)
    lock_error = None if locked.returncode == 0 else locked.stderr
    [answered] = state["context"].values()
    [answers] = new["context"].values()
    introduced = {
        name: value
        for name, value in answers.items()
        if name not in answered and not name.startswith("_")
    }
    text = describe(
        state["template"],
        state["commit"],
        new["commit"],
        marked,
        rejected,
        done,
        kept,
        lock_error,
        introduced,
    )
    body.write_text(text)
    count = len(marked) + len(rejected) + len(kept)
    outputs.write_text(f"behind=true\ncommit={new['commit'][:12]}\nconflicts={count}\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Follow the template this service was made from.")
    commands = parser.add_subparsers(dest="command", required=True)
    after = commands.add_parser("removals", help="delete or move what the template removed")
    after.add_argument(
        "--since", default="HEAD", help="the commit whose .cruft.json the update started from"
    )
    ci = commands.add_parser("propose", help="check, update and describe (scheduled CI)")
    ci.add_argument("--body", type=Path, required=True, help="where to write the description")
    ci.add_argument("--outputs", type=Path, required=True, help="behind=, commit=, conflicts=")
    arguments = parser.parse_args(argv)
    service = Path.cwd()
    if arguments.command == "propose":
        return propose(service, arguments.body, arguments.outputs)
    done, kept = removals(service, arguments.since)
    for line in done:
        print(line)
    for line in kept:
        print(f"KEPT {line}", file=sys.stderr)
    if not done and not kept:
        print("Nothing the template removed is left here.")
    return 1 if kept else 0


if __name__ == "__main__":
    sys.exit(main())

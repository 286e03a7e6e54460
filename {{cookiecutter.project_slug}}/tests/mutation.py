"""Mutation testing as a gate: ``uv run python -m tests.mutation``.

mutmut changes the modules that ``[tool.mutmut]`` in pyproject.toml names, one small
change (a mutant) at a time, and runs the tests that reach the changed function. A
mutant the tests do not notice survives. This command runs mutmut from scratch, then
fails unless

- every surviving mutant is listed in ``mutation.toml`` with the reason it is
  equivalent (no test could tell it from the original), and is still the change
  the list describes;
- every listed mutant still survives (a stale entry hides nothing, but says
  something false);
- the tests kill at least ``floor`` per cent of all mutants, so the list cannot
  grow into a way around the gate.

Work on one survivor with ``uv run mutmut show <name>``, add a test, and check it with
``uv run mutmut run <name>`` (``uv run mutmut browse`` shows them all).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

RULES = Path("mutation.toml")
# mutmut's statuses (`mutmut results`) that count as caught; every other one (survived,
# no tests, suspicious, segfault...) is a mutant the tests let through.
CAUGHT = {"killed", "timeout"}


@dataclass(frozen=True)
class Equivalent:
    mutant: str
    becomes: str
    why: str


@dataclass(frozen=True)
class Verdict:
    total: int
    killed: int
    # Each mutant the tests let through: its name, status and changed lines.
    missed: dict[str, tuple[str, str]]

    @property
    def score(self) -> float:
        return 100 * self.killed / self.total


def load_rules(text: str) -> tuple[float, dict[str, Equivalent]]:
    """mutation.toml: the floor, and each equivalent mutant by name (package left off)."""
    data = tomllib.loads(text)
    floor = float(data["floor"])
    listed: dict[str, Equivalent] = {}
    for entry in data.get("equivalent", []):
        equivalent = Equivalent(entry["mutant"], entry["becomes"], entry["why"])
        if not equivalent.why.strip():
            raise SystemExit(f"mutation.toml: {equivalent.mutant} is listed without a reason")
        if equivalent.mutant in listed:
            raise SystemExit(f"mutation.toml: {equivalent.mutant} is listed twice")
        listed[equivalent.mutant] = equivalent
    return floor, listed


def short_name(mutant: str) -> str:
    """``my_service.settings.x_f__mutmut_3`` -> ``settings.x_f__mutmut_3``: the list
    stays the same whatever the package is called."""
    return mutant.partition(".")[2]


def parse_results(output: str) -> dict[str, str]:
    """``mutmut results --all true``: one ``<name>: <status>`` line per mutant."""
    statuses = {}
    for line in output.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            statuses[name] = status
    return statuses


def changed_lines(diff: str) -> str:
    """The mutant's own lines of a ``mutmut show`` diff, stripped, one per line."""
    return "\n".join(
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    )


def problems(verdict: Verdict, floor: float, listed: dict[str, Equivalent]) -> list[str]:
    """Every way the run breaks the rules in the module docstring; empty when it holds."""
    found = []
    for name, (status, becomes) in sorted(verdict.missed.items()):
        entry = listed.get(name)
        if entry is None:
            found.append(f"{name} {status}, not listed in mutation.toml:\n{becomes}")
        elif status != "survived":
            found.append(f"{name} is listed as equivalent but {status}")
        elif entry.becomes != becomes:
            found.append(
                f"{name} is listed as `{entry.becomes}` but is now `{becomes}`: "
                "the code changed, check whether it is still equivalent"
            )
    for name in sorted(listed.keys() - verdict.missed.keys()):
        found.append(f"{name} is listed in mutation.toml but was killed: remove it")
    if verdict.score < floor:
        found.append(f"mutation score {verdict.score:.1f} % is below the floor of {floor:g} %")
    return found


def mutmut(*arguments: str, capture: bool = True) -> subprocess.CompletedProcess[str]:
    # The one installed beside this Python (the project's environment), as `uv run` finds it.
    executable = Path(sys.executable).with_name("mutmut")
    if not executable.exists():
        raise SystemExit("mutmut is not installed: run `uv sync`")
    # The arguments are this module's own, never input.
    return subprocess.run(  # noqa: S603
        [executable, *arguments], capture_output=capture, text=True, check=False
    )


def run_mutmut(max_children: int) -> Verdict:
    # From scratch: mutmut keeps results between runs, and a gate must not trust them.
    shutil.rmtree("mutants", ignore_errors=True)
    # Its progress goes to the terminal; only the results are read.
    started = mutmut("run", "--max-children", str(max_children), capture=False)
    if started.returncode != 0:
        raise SystemExit(f"mutmut run exited {started.returncode}")
    results = mutmut("results", "--all", "true")
    if results.returncode != 0:
        raise SystemExit(f"mutmut results exited {results.returncode}:\n{results.stderr}")
    statuses = parse_results(results.stdout)
    if not statuses:
        raise SystemExit("mutmut made no mutants: check [tool.mutmut] in pyproject.toml")
    # `mutmut show` per mutant would start a process each; its own function, in this
    # one (mutmut is pinned exactly, so the import holds).
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    missed = {
        short_name(name): (status, changed_lines(get_diff_for_mutant(name)))
        for name, status in statuses.items()
        if status not in CAUGHT
    }
    return Verdict(total=len(statuses), killed=len(statuses) - len(missed), missed=missed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-children",
        type=int,
        default=os.cpu_count() or 2,
        help="mutants tested at once (default: one per CPU)",
    )
    arguments = parser.parse_args(argv)
    floor, listed = load_rules(RULES.read_text())
    verdict = run_mutmut(arguments.max_children)
    print(
        f"\nmutation score: {verdict.killed} of {verdict.total} mutants killed, "
        f"{verdict.score:.1f} % (floor {floor:g} %); "
        f"{len(verdict.missed)} survived, {len(listed)} listed as equivalent"
    )
    found = problems(verdict, floor, listed)
    for problem in found:
        print(f"FAIL {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

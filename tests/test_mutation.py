"""The mutation gates: a default service's (`python -m tests.mutation`) and the template's
own (`scripts/mutation.py`, the same gate over hooks/ and scripts/) hold their floors,
with every survivor listed; and the gate fails each way it should."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import TEMPLATE_DIR, TEMPLATE_PROJECT, bake, run

SCORE = re.compile(
    r"mutation score: (?P<killed>\d+) of (?P<total>\d+) mutants killed, "
    r"(?P<score>[\d.]+) % \(floor (?P<floor>[\d.]+) %\)"
)
# Generous: about three minutes each on two idle cores, more beside the rest of the suite.
GATE_TIMEOUT = 1800


def load_gate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gate", TEMPLATE_PROJECT / "tests/mutation.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up by name while the class is created.
    sys.modules["gate"] = module
    spec.loader.exec_module(module)
    return module


def assert_gate_passed(output: str, record_property: Callable[[str, object], None]) -> None:
    score = SCORE.search(output)
    assert score is not None, output[-3000:]
    assert float(score["score"]) >= float(score["floor"])
    record_property(
        "figure", f"mutation score {score['score']} % ({score['killed']} of {score['total']})"
    )


@pytest.mark.mutation
def test_a_default_service_holds_its_mutation_floor(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """No services needed: the gate runs the tests not marked `services`."""
    project = bake(tmp_path)
    run(["uv", "sync", "--locked"], project)
    # run() fails the test on a non-zero exit: a survivor not listed, or below the floor.
    result = run(
        ["uv", "run", "--locked", "python", "-m", "tests.mutation"], project, timeout=GATE_TIMEOUT
    )
    assert_gate_passed(result.stdout, record_property)


@pytest.mark.mutation
def test_the_templates_own_logic_holds_its_mutation_floor(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    # A copy: mutmut writes mutants/ beside the code, and other tests read this checkout.
    copy = tmp_path / "template"
    shutil.copytree(
        TEMPLATE_DIR,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".tools", "mutants", "__pycache__", ".*_cache", ".coverage*"
        ),
    )
    result = run([sys.executable, "scripts/mutation.py"], copy, timeout=GATE_TIMEOUT)
    assert_gate_passed(result.stdout, record_property)


def test_the_gate_fails_on_each_broken_rule() -> None:
    gate = load_gate()
    floor, listed = gate.load_rules(
        'floor = 50\n[[equivalent]]\nmutant = "m.f__mutmut_1"\nbecomes = "x = 1"\nwhy = "same"\n'
        '[[equivalent]]\nmutant = "m.f__mutmut_2"\nbecomes = "y = 2"\nwhy = "same"\n'
    )
    holds = gate.Verdict(
        total=4, killed=2, missed={"m.f__mutmut_1": ("survived", "x = 1"),
                                   "m.f__mutmut_2": ("survived", "y = 2")},
    )  # fmt: skip
    assert gate.problems(holds, floor, listed) == []
    broken = gate.Verdict(
        total=5,
        killed=1,
        missed={
            "m.f__mutmut_1": ("survived", "x = 2"),
            "m.f__mutmut_3": ("no tests", "z = 3"),
            "m.f__mutmut_4": ("suspicious", "w = 4"),
            "m.f__mutmut_5": ("survived", "v = 5"),
        },
    )
    found = gate.problems(broken, floor, listed)
    assert [problem.split()[0] for problem in found] == [
        "m.f__mutmut_1",  # the code under a listed name changed
        "m.f__mutmut_3",  # not listed
        "m.f__mutmut_4",
        "m.f__mutmut_5",
        "m.f__mutmut_2",  # listed, but killed now
        "mutation",  # 20 % < 50 %
    ]
    assert "is now `x = 2`" in found[0]
    assert "no tests, not listed" in found[1]
    assert "was killed: remove it" in found[4]
    assert "20.0 % is below the floor of 50 %" in found[5]


def test_a_listed_mutant_that_is_no_longer_a_survivor_but_suspicious_is_reported() -> None:
    gate = load_gate()
    floor, listed = gate.load_rules(
        'floor = 0\n[[equivalent]]\nmutant = "m.f__mutmut_1"\nbecomes = "x"\nwhy = "same"\n'
    )
    verdict = gate.Verdict(total=1, killed=0, missed={"m.f__mutmut_1": ("timeout", "x")})
    assert gate.problems(verdict, floor, listed) == [
        "m.f__mutmut_1 is listed as equivalent but timeout"
    ]


@pytest.mark.parametrize(
    ("rules", "refusal"),
    [
        ('floor = 1\n[[equivalent]]\nmutant = "a"\nbecomes = "b"\nwhy = " "\n', "without a reason"),
        ("floor = 1\n" + '[[equivalent]]\nmutant = "a"\nbecomes = "b"\nwhy = "c"\n' * 2, "twice"),
    ],
)
def test_a_list_entry_without_a_reason_or_twice_is_refused(rules: str, refusal: str) -> None:
    with pytest.raises(SystemExit, match=refusal):
        load_gate().load_rules(rules)


def test_results_and_diffs_are_read_as_mutmut_prints_them() -> None:
    gate = load_gate()
    output = (
        "    my_service.settings.x_describe__mutmut_6: survived\n"
        "    my_service.request_id.xǁRequestIdMiddlewareǁ__call____mutmut_7: no tests\n"
        "Removed 2 obsolete test names\n"
    )
    assert gate.parse_results(output) == {
        "my_service.settings.x_describe__mutmut_6": "survived",
        "my_service.request_id.xǁRequestIdMiddlewareǁ__call____mutmut_7": "no tests",
    }
    assert gate.short_name("my_service.settings.x_f__mutmut_3") == "settings.x_f__mutmut_3"
    diff = "--- a.py\n+++ a.py\n@@ -1,2 +1,2 @@\n def f():\n-    return 1\n+    return 2\n"
    assert gate.changed_lines(diff) == "return 2"

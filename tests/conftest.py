"""Shared fixtures: compose stacks that clean up and show their logs when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.compose import STACKS_KEY, ComposeStack
from tests.helpers import require_docker


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    stacks = item.stash.get(STACKS_KEY, [])
    if report.failed and stacks:
        for stack in stacks:
            report.sections.append((f"docker compose logs ({stack.name})", stack.logs_tail()))
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures (sizes, timings) that tests recorded with record_property."""
    figures = [
        f"{report.nodeid}: {value}"
        for reports in terminalreporter.stats.values()
        for report in reports
        if isinstance(report, pytest.TestReport) and report.when == "call"
        for key, value in report.user_properties
        if key == "figure"
    ]
    if figures:
        terminalreporter.section("figures")
        for line in figures:
            terminalreporter.write_line(line)


@pytest.fixture
def compose_stack(request: pytest.FixtureRequest) -> Iterator[Callable[[Path, str], ComposeStack]]:
    """Make stacks for this test; each is taken down with its volumes afterwards."""
    require_docker()
    made: list[ComposeStack] = []
    request.node.stash[STACKS_KEY] = made

    def make(project: Path, label: str) -> ComposeStack:
        stack = ComposeStack(project, label)
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.down()

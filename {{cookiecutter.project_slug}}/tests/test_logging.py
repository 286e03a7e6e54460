"""The log handler: access lines written once per turn of the event loop, all else at once."""

from __future__ import annotations

import asyncio
import io
import logging
from select import PIPE_BUF

import pytest

from {{ cookiecutter.package_name }}.logging_config import (
    ACCESS_LOGGER,
    BatchingStreamHandler,
    configure_logging,
)


class CountingStream(io.StringIO):
    """Counts the write calls: each one is a system call on the real stdout."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[str] = []

    @property
    def writes(self) -> int:
        return len(self.written)

    def write(self, text: str) -> int:
        self.written.append(text)
        return super().write(text)


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("the pipe is gone")


def handler_on(stream: io.StringIO) -> BatchingStreamHandler:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def record(
    message: str, logger: str = ACCESS_LOGGER, level: int = logging.INFO
) -> logging.LogRecord:
    level_name = logging.getLevelName(level)
    return logging.makeLogRecord(
        {"name": logger, "msg": message, "levelno": level, "levelname": level_name}
    )


async def test_access_lines_of_one_loop_turn_are_written_with_one_call() -> None:
    stream = CountingStream()
    handler = handler_on(stream)
    for number in range(3):
        handler.handle(record(f"GET /{number} 200"))
    assert stream.getvalue() == "", "written before the turn ended"
    await asyncio.sleep(0)
    assert stream.getvalue() == "GET /0 200\nGET /1 200\nGET /2 200\n"
    assert stream.writes == 1


async def test_any_other_record_is_written_at_once_after_the_waiting_lines() -> None:
    stream = CountingStream()
    handler = handler_on(stream)
    handler.handle(record("GET / 200"))
    handler.handle(record("Shutting down", logger="uvicorn.error"))
    assert stream.getvalue() == "GET / 200\nShutting down\n"
    await asyncio.sleep(0)  # the turn's own flush finds nothing left to write
    assert stream.writes == 1


async def test_no_write_is_longer_than_a_pipe_keeps_whole_and_none_splits_a_line() -> None:
    stream = CountingStream()
    handler = handler_on(stream)
    lines = [f"GET /{number} 200 " + "é" * 150 + "x" * 150 for number in range(40)]
    for line in lines:
        handler.handle(record(line))
    handler.handle(record("y" * (PIPE_BUF + 10)))  # longer than the limit: alone
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == [*lines, "y" * (PIPE_BUF + 10)]
    assert 1 < stream.writes < len(lines)
    for written in stream.written[:-1]:
        assert len(written.encode()) <= PIPE_BUF
        assert written.endswith("\n")


def test_outside_an_event_loop_each_line_is_written_at_once() -> None:
    stream = CountingStream()
    handler = handler_on(stream)
    handler.handle(record("GET / 200"))
    assert stream.getvalue() == "GET / 200\n"


async def test_a_failed_write_is_reported_on_stderr_not_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    handler = handler_on(BrokenStream())
    handler.handle(record("GET / 200"))
    await asyncio.sleep(0)  # the flush runs as a loop callback: it must not raise there
    handler.handle(record("an error", level=logging.ERROR))
    assert "the pipe is gone" in capsys.readouterr().err


async def test_reconfiguring_writes_the_lines_still_waiting() -> None:
    first = CountingStream()
    configure_logging("INFO", first)
    logging.getLogger(ACCESS_LOGGER).info("GET /last 200")
    configure_logging("INFO", CountingStream())
    assert "GET /last 200" in first.getvalue()

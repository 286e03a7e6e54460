"""JSON-lines logging to stdout, so any log collector can parse every line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from select import PIPE_BUF
from typing import TextIO

SERVER_LOGGERS = ("uvicorn", "uvicorn.error"{% if cookiecutter.server == "gunicorn" %}, "gunicorn.error"{% endif %})
# The server's own access line is replaced by the app's (access_log.py), which has
# the route, the duration and the request id as fields. uvicorn writes its line
# only while this logger has a handler somewhere, so without one it costs nothing.
SERVER_ACCESS_LOGGER = "uvicorn.access"

# One line per request, written by access_log.py.
ACCESS_LOGGER = "{{ cookiecutter.package_name }}.access"

# Set per request by the request-id middleware; read by every log record.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Marks an exception already logged with its trace and request id (errors.py), so
# that the server's own "Exception in ASGI application", logged again without the
# id when the exception reaches it, is dropped.
_LOGGED = "_logged_with_request_id"


def mark_logged(error: BaseException) -> None:
    setattr(error, _LOGGED, True)


def _not_logged_before(record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not getattr(error, _LOGGED, False)


# Attributes every LogRecord has; anything else was passed with ``extra=``.
# uvicorn's color_message repeats the message with terminal escape codes.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id is not None:
            payload["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """Writes the access lines of one turn of the event loop in as few writes as it can.

    Under load, many requests end in the same turn of the loop, and writing each access
    line on its own (stdout is unbuffered in the image: each write is a system call, and
    a wake-up of the container runtime's log reader) cost more than building it. So an
    access line waits until the loop's current turn ends, and nothing else does: any
    other record is written at once, with the waiting lines before it, in order. That
    keeps the server's own lines prompt, the last ones before a worker exits included
    (uvicorn ends a worker by re-raising SIGTERM, which runs no exit handlers).

    Every worker writes to the same stdout pipe, and a pipe keeps a write whole only up
    to PIPE_BUF bytes: a longer one may interleave with another worker's and break a
    line in two. So the lines go out in writes of whole lines up to PIPE_BUF each.

    Not the standard library's QueueHandler: a writer thread would spare the loop a
    stalled log reader, but lose the lines still queued when uvicorn re-raises SIGTERM
    (the last ones of every worker), grow without bound behind the stall, and cost 40 %
    more CPU a line (the template's docs/libraries-or-our-own.md).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.name != ACCESS_LOGGER:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not in the event loop's thread
            self.flush()
            return
        if len(self._pending) == 1:
            # The turn's first line: write them all once the turn's callbacks have run.
            loop.call_soon(self.flush)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            lines, self._pending = self._pending, []
            try:
                for chunk in whole_lines_up_to(PIPE_BUF, lines):
                    self.stream.write(chunk)
                    self.stream.flush()
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": "writing log lines failed"}))


def whole_lines_up_to(limit: int, lines: list[str]) -> Iterator[str]:
    """The lines joined into chunks of at most ``limit`` UTF-8 bytes, never splitting
    one; a line longer than the limit is a chunk of its own."""
    chunk: list[str] = []
    size = 0
    for line in lines:
        length = len(line) if line.isascii() else len(line.encode())
        if chunk and size + length > limit:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += length
    if chunk:
        yield "".join(chunk)


def configure_logging(level: str, stream: TextIO | None = None) -> None:
    """Route the root and the server's loggers through one JSON handler.

    Every logger, the app's access log included, takes its level from the root,
    so LOG_LEVEL governs all of them under either server. ``stream`` is stdout
    unless the caller is a command whose stdout is its result.
    """
    handler = BatchingStreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(_not_logged_before)
    root = logging.getLogger()
    for previous in root.handlers:
        previous.flush()  # access lines a batching handler still holds
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in SERVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        # The server may have set a level of its own on them; LOG_LEVEL rules.
        logger.setLevel(logging.NOTSET)
    server_access = logging.getLogger(SERVER_ACCESS_LOGGER)
    server_access.handlers.clear()
    server_access.propagate = False

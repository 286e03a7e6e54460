"""Serving with gunicorn and uvicorn workers: the settings first, then the server."""

from __future__ import annotations

import sys
from typing import Any

# uvicorn-worker ships no type information: the worker is Any to mypy.
from uvicorn_worker import UvicornWorker  # type: ignore[import-untyped]

from {{ cookiecutter.package_name }}.settings import load_settings, request_grace


class Worker(UvicornWorker):  # type: ignore[misc]
    """uvicorn-worker's worker, with uvicorn's graceful shutdown bounded.

    uvicorn-worker 0.4 does not pass uvicorn a graceful-shutdown timeout, so after
    SIGTERM a worker waits for in-flight requests without limit, and gunicorn kills
    it at graceful_timeout: no response, no lifespan shutdown (pools not closed, log
    lines and spans lost). Here uvicorn gives the requests four fifths of the grace,
    cancels what is left, and the lifespan's shutdown has the rest.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grace = request_grace(self.cfg.graceful_timeout)
        self.config.timeout_graceful_shutdown = grace


def main() -> None:
    load_settings()
    # Imported only now: gunicorn parses WEB_CONCURRENCY while importing.
    from gunicorn.app.wsgiapp import run

    # Workers, bind, timeouts and logs are in gunicorn.conf.py.
    sys.argv = [sys.argv[0], "--config", "gunicorn.conf.py"]
    run(prog="gunicorn")

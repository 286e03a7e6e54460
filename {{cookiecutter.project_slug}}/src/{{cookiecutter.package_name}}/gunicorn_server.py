"""Serving with gunicorn and uvicorn workers: the settings first, then the server."""

from __future__ import annotations

import sys

from {{ cookiecutter.package_name }}.settings import load_settings


def main() -> None:
    load_settings()
    # Imported only now: gunicorn parses WEB_CONCURRENCY while importing.
    from gunicorn.app.wsgiapp import run

    # Workers, bind, timeouts and logs are in gunicorn.conf.py.
    sys.argv = [sys.argv[0], "--config", "gunicorn.conf.py"]
    run(prog="gunicorn")

"""gunicorn settings, evaluated once in the master before any worker starts."""
{%- if cookiecutter.use_metrics %}

import os
import shutil
from pathlib import Path
from typing import Any
{%- endif %}

from {{ cookiecutter.package_name }}.settings import load_settings

# Also checked here (not only in __main__) for anyone who runs `gunicorn` directly:
# a bad variable stops the master instead of crash-looping every worker.
_settings = load_settings()

# Loaded in each worker after the fork (no preload_app): whatever the app starts
# (a background thread, a per-process file) must belong to the worker using it.
wsgi_app = "{{ cookiecutter.package_name }}.main:create_app()"
# uvicorn-worker's worker (it replaces the deprecated uvicorn.workers module), with
# uvicorn's graceful shutdown bounded by graceful_timeout (see gunicorn_server.py).
worker_class = "{{ cookiecutter.package_name }}.gunicorn_server.Worker"
workers = _settings.web_concurrency
bind = f"0.0.0.0:{_settings.port}"
forwarded_allow_ips = _settings.forwarded_allow_ips

# On SIGTERM a worker gets this long: in-flight requests four fifths of it, then its
# lifespan's shutdown. compose.yaml's stop_grace_period is a little longer, so
# Docker's SIGKILL never cuts it short.
graceful_timeout = _settings.graceful_timeout_seconds
# A worker silent for this long is killed and replaced.
timeout = 60
keepalive = _settings.keepalive_seconds

# Error logs to stdout, as JSON lines like the app's own. No server access log:
# the app writes one JSON line per request itself (access_log.py).
accesslog = None
loglevel = _settings.log_level.lower()
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "{{ cookiecutter.package_name }}.logging_config.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
        }
    },
    "root": {"handlers": ["stdout"], "level": _settings.log_level},
    "loggers": {
        "gunicorn.error": {"handlers": [], "propagate": True},
    },
}
# The gunicornc control socket wants a writable $HOME; the container has none,
# and the orchestrator, not a shell in the container, manages the process.
control_socket_disable = True
# Workers heartbeat through a file: keep it in memory, which also works on a
# read-only root file system without any tmpfs mounted.
worker_tmp_dir = "/dev/shm"  # noqa: S108 - a heartbeat file, not data
{%- if cookiecutter.use_metrics %}


def on_starting(server: Any) -> None:
    """Start every run with an empty metrics directory.

    Workers write their counters there (PROMETHEUS_MULTIPROC_DIR, set in the
    image); files of an earlier run would be added to this run's figures.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True)


def child_exit(server: Any, worker: Any) -> None:
    """Stop counting an exited worker's in-progress and pool gauges."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported here, in the master, only once the directory variable is set.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
{%- endif %}

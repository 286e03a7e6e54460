"""Serving with uvicorn's own process manager: the settings first, then the server."""

from __future__ import annotations
{%- if cookiecutter.use_metrics %}

import os
import shutil
from pathlib import Path
{%- endif %}

from {{ cookiecutter.package_name }}.logging_config import configure_logging
from {{ cookiecutter.package_name }}.settings import load_settings


def main() -> None:
    settings = load_settings()
    # JSON logs from the supervising process too, not only from the workers.
    configure_logging(settings.log_level)
{%- if cookiecutter.use_metrics %}
    # Workers write their metrics there (set in the image); start every run
    # empty, or an earlier run's counts would be added to this one's.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        Path(metrics_dir).mkdir(parents=True)
{%- endif %}
    import uvicorn

    uvicorn.run(
        "{{ cookiecutter.package_name }}.main:create_app",
        factory=True,
        host="0.0.0.0",  # noqa: S104 - inside a container, listening on all interfaces is the point
        port=settings.port,
        workers=settings.web_concurrency,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        proxy_headers=True,
        timeout_keep_alive=settings.keepalive_seconds,
        # After SIGTERM, in-flight requests get this long, then are cancelled and the
        # lifespan's shutdown runs; compose.yaml's stop_grace_period is longer.
        timeout_graceful_shutdown=settings.request_grace_seconds,
        log_config=None,
        # The app writes its own access line (access_log.py).
        access_log=False,
    )

"""``python -m {{ cookiecutter.package_name }}``: serve the app with uvicorn."""

from __future__ import annotations

import uvicorn

from {{ cookiecutter.package_name }}.settings import load_settings


def main() -> None:
    # Validated before uvicorn forks, so a bad variable stops the process once
    # with its name rather than crash-looping every worker.
    settings = load_settings()
    uvicorn.run(
        "{{ cookiecutter.package_name }}.main:create_app",
        factory=True,
        host="0.0.0.0",  # noqa: S104 - inside a container, listening on all interfaces is the point
        port=settings.port,
        workers=settings.web_concurrency,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        proxy_headers=True,
        # In-flight requests get 25 s after SIGTERM; compose.yaml's
        # stop_grace_period is a little longer, so Docker never cuts them short.
        timeout_graceful_shutdown=25,
        log_config=None,
    )


if __name__ == "__main__":
    main()

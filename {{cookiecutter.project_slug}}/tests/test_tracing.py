"""Tracing: off without an endpoint; with one, a request's spans reach an OTLP/HTTP receiver."""

from __future__ import annotations

import json
import threading

import pytest
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from {{ cookiecutter.package_name }}.tracing import create_tracer_provider
from tests.plugins.tracing import Receiver


def test_without_an_endpoint_nothing_is_set_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    threads = {thread.name for thread in threading.enumerate()}
    app = create_app(settings)
    assert app.state.tracer_provider is None
    assert {thread.name for thread in threading.enumerate()} == threads


def test_the_standard_variables_name_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "renamed")
    provider = create_tracer_provider()
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "renamed"
    finally:
        provider.shutdown()


async def test_a_request_is_one_trace_with_its_client_spans(
    settings: Settings, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    # Probes are not access-logged by default; this one's line must carry the trace.
    app = create_app(settings.model_copy(update={"access_log_probes": True}))
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            response = await http.get("/health/dependencies", headers={"X-Request-ID": "traced"})
    # Leaving the lifespan flushed the buffered spans.
    assert response.status_code == 200
    spans = [
        (resource.resource, span)
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [(resource, server)] = [(r, s) for r, s in spans if s.name == "GET /health/dependencies"]
    attributes = {a.key: a.value.string_value for a in resource.attributes}
    assert attributes["service.name"] == "{{ cookiecutter.project_slug }}"
    children = [s for _, s in spans if s.parent_span_id == server.span_id]
    assert all(child.trace_id == server.trace_id for child in children)
    # The lifespan registers a dependency probe per client (main.py), and instruments
    # that client: each probe's call is a child span naming its database system, or
    # an HTTP client span for a dependency reached over HTTP.
    systems = {
        attribute.value.string_value
        for child in children
        for attribute in child.attributes
        if attribute.key in {"db.system", "db.system.name"}
    } | {
        "http"
        for child in children
        for attribute in child.attributes
        if attribute.key in {"http.request.method", "http.method"}
    }
    assert len(systems) == len(app.state.dependency_probes), [c.name for c in children]
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    traced = [line for line in lines if line.get("request_id") == "traced"]
    assert traced
    assert all(line["trace_id"] == server.trace_id.hex() for line in traced)

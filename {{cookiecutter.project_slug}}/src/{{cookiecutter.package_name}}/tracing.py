"""OpenTelemetry tracing, exported over OTLP/HTTP.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
is set: then no provider, no exporter thread and no instrumentation exist. The
SDK reads the other standard variables itself (OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER, OTEL_EXPORTER_OTLP_HEADERS, ...);
the service name defaults to "{{ cookiecutter.project_slug }}".

The provider is made by create_app, which runs in each worker after the fork
(the app is never preloaded in a parent process): the batch span processor's
export thread would not survive a fork. The lifespan instruments each client as
it opens it (main.py says which) and, at shutdown, flushes the spans still
buffered.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
DEFAULT_SERVICE_NAME = "{{ cookiecutter.project_slug }}"


def tracing_configured() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def create_tracer_provider() -> TracerProvider | None:
    """A provider exporting in batches to the configured endpoint, or None."""
    if not tracing_configured():
        return None
    # The default name first, then OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES over it.
    resource = Resource.create({SERVICE_NAME: DEFAULT_SERVICE_NAME}).merge(
        OTELResourceDetector().detect()
    )
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Global too, so spans the service's own code starts (trace.get_tracer)
    # join the request's trace. Only the first provider of a process can be.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    return provider


class TraceIdsInLogs(logging.Filter):
    """Adds the current span's ids to each record: the JSON log line then carries them
    (hex, as in W3C traceparent), so a log line leads to its trace and back."""

    def filter(self, record: logging.LogRecord) -> bool:
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            record.trace_id = format(span.trace_id, "032x")
            record.span_id = format(span.span_id, "016x")
        return True


def instrument_app(app: FastAPI, provider: TracerProvider) -> None:
    """A span per request, and the ids of the current span in every log line."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIdsInLogs())
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        # One span per request, not one more per ASGI message sent or received.
        exclude_spans=["receive", "send"],
    )


def record_caller(subject: str, client_id: str | None) -> None:
    """Who the request is for, on its span: the authenticated subject and client, as a
    dependency that verified them says (never their credentials)."""
    span = trace.get_current_span()
    span.set_attribute("enduser.id", subject)
    if client_id is not None:
        span.set_attribute("enduser.client_id", client_id)


@contextmanager
def instrumented(
    provider: TracerProvider, instrumentor: BaseInstrumentor, **options: Any
) -> Iterator[None]:
    """Spans for every call through one client library, until the block exits.

    The lifespan enters one for each client it opens, with the options that
    client's instrumentor takes, on its exit stack: the instrumentation is
    removed at shutdown, before the provider flushes.
    """
    instrumentor.instrument(tracer_provider=provider, **options)
    try:
        yield
    finally:
        # instrument() declines, logging why, on a dependency conflict: nothing to undo then.
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def instrumented_httpx(provider: TracerProvider) -> AbstractContextManager[None]:
    """Spans for outgoing httpx requests, once the service depends on httpx."""
    # httpx is not a runtime dependency until the service calls out with it;
    # instrumenting a missing library would log an error at every start.
    if importlib.util.find_spec("httpx") is None:
        return nullcontext()
    return instrumented(provider, HTTPXClientInstrumentor())

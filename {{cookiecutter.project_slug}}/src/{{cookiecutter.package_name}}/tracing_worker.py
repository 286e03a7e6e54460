"""The trace of a request, continued into the jobs it enqueues (see tracing.py).

At enqueue the current trace context goes into the message's labels (W3C traceparent,
by the global propagator); the worker takes it out and runs each job in a span of its
own, a child of the span that enqueued it, with the job's name, id, attempt and outcome.
A retry carries the first enqueue's context: every attempt is a child of the request.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from {{ cookiecutter.package_name }}.tracing import TraceIdsInLogs

# The running job's span, and the token that restores the context it replaced.
span_var: ContextVar[tuple[Span, object] | None] = ContextVar("job_span", default=None)


class JobTracing(TaskiqMiddleware):
    """Injects the trace context at enqueue; a span per run in the worker."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        super().__init__()
        # The app enqueues only (no provider needed); the worker's spans use its own.
        self.tracer = provider.get_tracer(__name__) if provider is not None else None

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        for key, value in carrier.items():
            message.labels.setdefault(key, value)
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if self.tracer is None:
            return message
        labels = {key: str(value) for key, value in message.labels.items()}
        span = self.tracer.start_span(
            f"job {message.task_name}",
            context=propagate.extract(labels),
            kind=SpanKind.CONSUMER,
            attributes={
                "job.name": message.task_name,
                "job.id": message.task_id,
                "job.attempt": int(message.labels.get("_retries", 0)) + 1,
            },
        )
        # Current for the job (its logs, its database spans): each job runs in an
        # asyncio task of its own, so this is that job's only.
        token = context.attach(trace.set_span_in_context(span))
        span_var.set((span, token))
        return message

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        # Before the retry's on_error (taskiq calls them in reverse): the error is the job's.
        running = span_var.get()
        if running is not None:
            running[0].record_exception(exception)

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        running = span_var.get()
        if running is None:
            return
        span, token = running
        span_var.set(None)
        if not result.is_err:
            span.set_attribute("job.outcome", "succeeded")
        else:
            # A retry replaces the result's error with NoResultError (metrics_worker too).
            retried = isinstance(result.error, NoResultError)
            span.set_attribute("job.outcome", "retried" if retried else "failed")
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        context.detach(token)  # type: ignore[arg-type]  # attach's own token


def instrument_worker() -> None:
    """The ids of the job's span in each log line the worker writes, as in the app."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIdsInLogs())

"""Tracing and the worker: a job's span continues the trace of the request that enqueued it."""

from __future__ import annotations

import pytest
from fastapi import Request
from httpx import ASGITransport, AsyncClient
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from taskiq import async_shared_broker

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.tracing import Receiver
from tests.plugins.worker import eventually, running_worker

pytestmark = pytest.mark.services

runs: list[int] = []


@async_shared_broker.task(task_name="tests.traced")
async def traced(fail_first: bool) -> None:
    runs.append(1)
    if fail_first and len(runs) == 1:
        raise RuntimeError("the first attempt fails")


@pytest.fixture(autouse=True)
def no_runs_yet() -> None:
    runs.clear()


def spans(receiver: Receiver) -> list[Span]:
    return [
        span
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]


async def test_a_jobs_spans_are_children_of_the_request_that_enqueued_it(
    settings: Settings, receiver: Receiver
) -> None:
    app = create_app(settings)

    @app.post("/test/enqueue")
    async def enqueue(request: Request) -> None:
        await traced.kicker().with_broker(request.app.state.broker).kiq(True)

    async with running_worker(settings):
        async with app.router.lifespan_context(app):
            transport = ASGITransport(app=app)
            async with AsyncClient(transport=transport, base_url="http://test") as http:
                assert (await http.post("/test/enqueue")).status_code == 200

        async def retried() -> bool:
            return len(runs) == 2

        await eventually(retried)
    # Both providers shut down (the app's lifespan, the worker's): every span exported.
    [request] = [s for s in spans(receiver) if s.name == "POST /test/enqueue"]
    jobs = [s for s in spans(receiver) if s.name == "job tests.traced"]
    attributes = [{a.key: a.value for a in job.attributes} for job in jobs]
    assert sorted(a["job.attempt"].int_value for a in attributes) == [1, 2]
    for job, attribute in zip(jobs, attributes, strict=True):
        assert job.trace_id == request.trace_id
        assert job.parent_span_id == request.span_id
        assert job.kind == Span.SpanKind.SPAN_KIND_CONSUMER
        assert attribute["job.name"].string_value == "tests.traced"
        assert attribute["job.id"].string_value == attributes[0]["job.id"].string_value
    outcomes = {a["job.attempt"].int_value: a["job.outcome"].string_value for a in attributes}
    assert outcomes == {1: "retried", 2: "succeeded"}

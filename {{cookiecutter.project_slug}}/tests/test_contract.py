"""The API keeps its OpenAPI contract under any input, found by Schemathesis.

Every operation in /openapi.json is called with generated valid and invalid input,
then in generated sequences that follow the schema's links, against the app in-process
with its lifespan and the real backing services; every response must pass every check
(no 500, a documented status, content type and headers, a body matching its schema,
valid input accepted, invalid input rejected, 405 with ``Allow``...). A route a team adds
is covered without anyone writing a line here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from httpx import AsyncClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.result import Ok
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.schemas import OpenApiSchema

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings

# Bounded so the whole contract takes seconds; raise it locally to search harder.
EXAMPLES = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
load_all_checks()
# Every built-in check, as `schemathesis run --checks all` would run them.
ALL_CHECKS = [check for check in CHECKS.get_all() if not isinstance(check, type)]


@pytest.fixture
def api_schema(
    settings: Settings, client: AsyncClient, client_headers: dict[str, str]
) -> Iterator[OpenApiSchema]:
    """The schema of an app of its own: Schemathesis runs it, with its lifespan, in its
    own event loop. ``client`` is only asked for so its teardown empties the tables."""
{%- if cookiecutter.use_rate_limit %}
    # Hundreds of requests from one client: at the default limit the search would end in
    # 429s (answers it checks all the same). The limit's own tests are test_rate_limit.py.
    app: FastAPI = create_app(settings.model_copy(update={"rate_limit_default": "100000/minute"}))
{%- else %}
    app: FastAPI = create_app(settings)
{%- endif %}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    if client_headers:
        # The test client's credentials on every generated request, except those where
        # Schemathesis leaves them out on purpose to see the request refused.
        @schema.auth(refresh_interval=None)
        class ClientCredentials:
            def get(self, case: schemathesis.Case[Any], context: Any) -> dict[str, str]:
                return client_headers

            def set(self, case: schemathesis.Case[Any], data: dict[str, str], context: Any) -> None:
                case.headers.update(data)

    yield schema
    shutdown_lifespans()  # closes the app's pools in the loop that opened them


@pytest.fixture
def empty_services(settings: Settings, request: pytest.FixtureRequest) -> Callable[[], None]:
    """Empties the backing services, as between two tests, from outside Schemathesis' loop
    (through an app of its own, whose pools live in the loop this makes)."""

    async def empty() -> None:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            for reset in request.config.hook.pytest_app_reset(app=app):
                await reset

    return lambda: asyncio.run(empty())


def operations(schema: OpenApiSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    found = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation the schema defines wrongly: {result}"
        found.append(result.ok())
    assert found, "the schema has no operations"
    return found


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_keeps_its_contract(
    api_schema: OpenApiSchema, mode: GenerationMode
) -> None:
    # One Hypothesis run per operation, built here rather than with schema.parametrize(),
    # whose lazy fixture loading does not work with current pytest.
    for operation in operations(api_schema):
        raw = operation.definition.raw
        has_input = raw.get("parameters") or raw.get("requestBody")
        if mode is GenerationMode.NEGATIVE and not has_input:
            continue  # no input to get wrong

        @given(case=operation.as_strategy(generation_mode=mode))
        @EXAMPLES
        def keeps_its_contract(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(checks=ALL_CHECKS)

        keeps_its_contract()

{%- if cookiecutter.include_example_api %}


def test_sequences_of_calls_keep_the_contract(
    api_schema: OpenApiSchema, empty_services: Callable[[], None]
) -> None:
    # Follows the OpenAPI links (create an item, then read, replace and delete it).
    machine = api_schema.as_state_machine()

    class Checked(machine):  # type: ignore[valid-type, misc]
        def setup(self) -> None:
            # Each sequence starts from empty tables. Hypothesis replays a sequence's first
            # steps to explore the next ones and requires the same answers each time: items
            # left by an earlier sequence change what GET /items links to, and it stops
            # with FlakyStrategyDefinition.
            empty_services()

        def validate_response(self, response, case, **kwargs):  # type: ignore[no-untyped-def]
            case.validate_response(response, checks=ALL_CHECKS, **kwargs)

    Checked.run(settings=settings(EXAMPLES, max_examples=15, stateful_step_count=6))
{%- endif %}

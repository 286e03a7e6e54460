"""Tracing and the database: its spans name the server and the database."""

from __future__ import annotations

from urllib.parse import urlsplit

from httpx import ASGITransport, AsyncClient
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.tracing import Receiver


async def test_the_database_spans_name_its_address_and_database(
    settings: Settings, receiver: Receiver
) -> None:
    """As a tracing backend draws them on its service map. asyncpg connects with the DSN
    itself; the engine's URL repeats its host and database for this (db.engine_url)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/health/dependencies")).status_code == 200
    attributes = [
        {a.key: a.value for a in span.attributes}
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    systems = [named(span, "db.system", "db.system.name") for span in attributes]
    database = [
        span for span, system in zip(attributes, systems, strict=True) if "postgresql" in system
    ]
    assert database, f"no span of the database: {systems}"
    dsn = urlsplit(settings.database_dsn)
    for span in database:
        assert named(span, "db.name", "db.namespace") == {dsn.path.removeprefix("/")}, span
        assert named(span, "net.peer.name", "server.address") == {dsn.hostname}, span


def named(span: dict[str, AnyValue], *keys: str) -> set[str]:
    """The values of a span's attributes under any of these keys (the semantic
    conventions renamed them: older and newer instrumentations differ)."""
    return {span[key].string_value for key in span.keys() & set(keys)}

"""Tracing and the rate limits: the limiter's Redis round trip is a span of the request."""

from __future__ import annotations

from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.tracing import Receiver


async def test_a_limited_request_has_the_limiters_redis_spans(
    settings: Settings, receiver: Receiver
) -> None:
    app = create_app(settings)
    app.add_api_route("/test/limited", lambda: {})
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get("/test/limited")).headers["RateLimit"]
    spans = [
        span
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [server] = [s for s in spans if s.name == "GET /test/limited"]
    children = [s for s in spans if s.parent_span_id == server.span_id]
    redis = [
        s
        for s in children
        if any(
            a.key in {"db.system", "db.system.name"} and a.value.string_value == "redis"
            for a in s.attributes
        )
    ]
    # The hit and the window's state: one round trip (a pipeline of two Lua scripts).
    assert len(redis) == 1, [s.name for s in children]

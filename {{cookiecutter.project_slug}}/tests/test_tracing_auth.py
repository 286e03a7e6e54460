"""Tracing and authentication: the caller on the request's span, the token nowhere."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from {{ cookiecutter.package_name }}.auth import CallerDep
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.auth import Issuer
from tests.plugins.tracing import Receiver


async def test_the_span_names_the_caller_and_never_the_token(
    settings: Settings, receiver: Receiver, issuer: Issuer
) -> None:
    app: FastAPI = create_app(settings)

    @app.get("/test/whoami")
    async def whoami(caller: CallerDep) -> str:
        return caller.subject

    token = issuer.token(sub="user-7")
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            headers = {"Authorization": f"Bearer {token}"}
            response = await http.get("/test/whoami", headers=headers)
    assert response.status_code == 200
    spans = [
        span
        for request in receiver.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    [server] = [span for span in spans if span.name == "GET /test/whoami"]
    attributes = {a.key: a.value.string_value for a in server.attributes}
    assert attributes["enduser.id"] == "user-7"
    assert attributes["enduser.client_id"] == "test-client"
    signature = token.split(".")[2]
    assert all(signature not in str(span) for span in spans)

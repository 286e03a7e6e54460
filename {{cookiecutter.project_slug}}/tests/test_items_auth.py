"""The example resource's access rule: reads need items:read, writes items:write."""

from __future__ import annotations

from fastapi import FastAPI
from httpx import AsyncClient

from tests.plugins.auth import Issuer


async def test_a_reader_reads_and_cannot_write(client: AsyncClient, issuer: Issuer) -> None:
    client.headers["Authorization"] = f"Bearer {issuer.token('items:read')}"
    assert (await client.get("/api/items")).status_code == 200
    refused = await client.post("/api/items", json={"name": "x"})
    assert refused.status_code == 403
    assert 'scope="items:write"' in refused.headers["www-authenticate"]


async def test_a_writer_writes_and_cannot_read(client: AsyncClient, issuer: Issuer) -> None:
    client.headers["Authorization"] = f"Bearer {issuer.token('items:write')}"
    created = await client.post("/api/items", json={"name": "x"})
    assert created.status_code == 201
    assert (await client.get(created.headers["location"])).status_code == 403


async def test_without_a_token_nothing_is_read(client: AsyncClient) -> None:
    del client.headers["Authorization"]
    assert (await client.get("/api/items")).status_code == 401


def test_the_schema_names_each_operation_its_scope(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    writes = {"post", "put", "delete"}
    operations = [
        (method, operation)
        for path in ("/api/items", "/api/items/{item_id}")
        for method, operation in paths[path].items()
    ]
    assert len(operations) == 5
    for method, operation in operations:
        scope = "items:write" if method in writes else "items:read"
        assert operation["security"] == [{"oidc": [scope]}, {"bearer": [scope]}], method

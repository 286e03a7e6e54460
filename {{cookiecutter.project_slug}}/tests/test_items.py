from __future__ import annotations

import pytest
from httpx import AsyncClient

PROBLEM = "application/problem+json"


async def test_create_read_update_delete(client: AsyncClient) -> None:
    created = await client.post("/api/items", json={"name": "first", "description": "one"})
    assert created.status_code == 201
    item = created.json()
    assert item["name"] == "first"
    assert created.headers["location"] == f"/api/items/{item['id']}"

    fetched = await client.get(created.headers["location"])
    assert fetched.json() == item

    updated = await client.put(f"/api/items/{item['id']}", json={"name": "renamed"})
    assert updated.status_code == 200
    assert updated.json()["name"] == "renamed"
    assert updated.json()["description"] is None

    listed = await client.get("/api/items")
    assert [i["id"] for i in listed.json()] == [item["id"]]

    deleted = await client.delete(f"/api/items/{item['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/api/items/{item['id']}")).status_code == 404


async def test_pages_follow_id_order(client: AsyncClient) -> None:
    ids = [(await client.post("/api/items", json={"name": f"n{i}"})).json()["id"] for i in range(5)]
    page = await client.get("/api/items", params={"limit": 2, "offset": 2})
    assert [i["id"] for i in page.json()] == ids[2:4]


async def test_an_invalid_payload_is_a_422_problem_naming_the_field(client: AsyncClient) -> None:
    response = await client.post("/api/items", json={"name": ""})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 422
    assert body["errors"][0]["loc"] == ["body", "name"]
    assert "at least 1 character" in body["errors"][0]["message"]


@pytest.mark.parametrize(
    "payload",
    [
        {"name": "nul\u0000inside"},
        {"name": "ok", "description": "nul\u0000inside"},
    ],
)
async def test_text_the_database_cannot_store_is_a_422(
    client: AsyncClient, payload: dict[str, str]
) -> None:
    response = await client.post("/api/items", json=payload)
    assert response.status_code == 422, response.text


async def test_a_lone_surrogate_is_a_422(client: AsyncClient) -> None:
    response = await client.post(
        "/api/items",
        content=b'{"name": "\\ud800"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"offset": 10**7}]
)
async def test_pagination_is_bounded(client: AsyncClient, params: dict[str, int]) -> None:
    assert (await client.get("/api/items", params=params)).status_code == 422


async def test_an_id_beyond_the_column_is_422_not_a_database_error(client: AsyncClient) -> None:
    response = await client.get(f"/api/items/{2**63}")
    assert response.status_code == 422


async def test_a_64_bit_id_is_just_missing(client: AsyncClient) -> None:
    response = await client.get(f"/api/items/{2**40}")
    assert response.status_code == 404


async def test_missing_item_is_a_404_problem(client: AsyncClient) -> None:
    response = await client.get("/api/items/999999")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["detail"] == "item 999999 not found"


async def test_405_on_an_item_lists_all_its_methods(client: AsyncClient) -> None:
    response = await client.patch("/api/items/1", json={})
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "PUT", "DELETE"}

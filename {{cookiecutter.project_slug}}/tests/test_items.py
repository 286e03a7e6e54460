from __future__ import annotations

from httpx import AsyncClient


async def test_create_read_update_delete(client: AsyncClient) -> None:
    created = await client.post("/api/items", json={"name": "first", "description": "one"})
    assert created.status_code == 201
    item = created.json()
    assert item["name"] == "first"

    fetched = await client.get(f"/api/items/{item['id']}")
    assert fetched.json() == item

    updated = await client.put(f"/api/items/{item['id']}", json={"name": "renamed"})
    assert updated.status_code == 200
    assert updated.json()["name"] == "renamed"
    assert updated.json()["description"] is None

    listed = await client.get("/api/items")
    assert [i["id"] for i in listed.json()] == [item["id"]]

    deleted = await client.delete(f"/api/items/{item['id']}")
    assert deleted.status_code == 204
    assert (await client.get(f"/api/items/{item['id']}")).status_code == 404


async def test_invalid_payload_is_422_json(client: AsyncClient) -> None:
    response = await client.post("/api/items", json={"name": ""})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]


async def test_an_id_beyond_the_column_is_422_not_a_database_error(client: AsyncClient) -> None:
    response = await client.get(f"/api/items/{2**40}")
    assert response.status_code == 422


async def test_missing_item_is_404_json(client: AsyncClient) -> None:
    response = await client.get("/api/items/999999")
    assert response.status_code == 404
    assert response.json() == {"detail": "item 999999 not found"}

"""Example resource: a small CRUD API over the ``items`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, delete, insert, select, update

from {{ cookiecutter.package_name }}.db import ConnectionDep
from {{ cookiecutter.package_name }}.errors import problem_responses
{%- if cookiecutter.use_worker %}
from {{ cookiecutter.package_name }}.jobs import process_item
{%- endif %}
from {{ cookiecutter.package_name }}.models import Item
{%- if cookiecutter.use_worker %}
from {{ cookiecutter.package_name }}.worker import BrokerDep
{%- endif %}

# Every route reads or writes the database: a 503 when it is down, besides the
# statuses each route adds (422, 400, 413 and 500 are added for every route that can
# return them; see errors.py). Reads and writes are two routers so that api/__init__.py
# can give each its own access rule.
reads = APIRouter(prefix="/items", tags=["items"], responses=problem_responses(503))
writes = APIRouter(prefix="/items", tags=["items"], responses=problem_responses(503))

# The id column is a 64-bit integer: a larger value is a 422 here, not a database error.
ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The item's id")]


# PostgreSQL text cannot hold NUL: refused here, and the pattern tells clients in the
# schema, instead of failing in the database as a 500. (Lone surrogates never get this far:
# the JSON parser refuses them.)
NO_NUL = r"^[^\x00]*$"


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    description: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)


class ItemOut(BaseModel):
    # Validated from the statements' result rows, which have one attribute per column.
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    created_at: datetime
{%- if cookiecutter.use_worker %}
    processed_at: datetime | None = Field(
        description="When the background job processed the item; null until then"
    )
{%- endif %}


# Each route is one statement on an autocommit connection (db.ConnectionDep): one round
# trip, atomic on its own, and RETURNING brings back what the server filled in. The
# statements are built once, here: SQLAlchemy then reuses their compiled form and cache
# key, and a request only binds its values. The ORM model gives the table and columns;
# a handler that needs several statements in one transaction takes db.SessionDep.
COLUMNS = (Item.id, Item.name, Item.description, Item.created_at{% if cookiecutter.use_worker %}, Item.processed_at{% endif %})
SELECT_ONE = select(*COLUMNS).where(Item.id == bindparam("item_id"))
SELECT_PAGE = (
    select(*COLUMNS).order_by(Item.id).limit(bindparam("limit")).offset(bindparam("offset"))
)
INSERT = insert(Item).returning(*COLUMNS)
# SET's own parameters take the column names, so the values are bound under others.
UPDATE = (
    update(Item)
    .where(Item.id == bindparam("item_id"))
    .values(name=bindparam("new_name"), description=bindparam("new_description"))
    .returning(*COLUMNS)
)
DELETE = delete(Item).where(Item.id == bindparam("item_id")).returning(Item.id)


def not_found(item_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


# OpenAPI links from a created item to the operations that take its id: clients (and the
# stateful contract test) can follow them without knowing the URL layout.
_ITEM_LINKS = {
    operation: {"operationId": operation, "parameters": {"item_id": "$response.body#/id"}}
    for operation in ("get_item", "update_item", "delete_item")
}


@writes.post(
    "",
    response_model=ItemOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_201_CREATED: {
            "description": "Created",
            "headers": {
                "Location": {"description": "The new item's URL", "schema": {"type": "string"}}
            },
            "links": _ITEM_LINKS,
        }
    },
)
async def create_item(
    payload: ItemIn,
    connection: ConnectionDep,
{%- if cookiecutter.use_worker %}
    broker: BrokerDep,
{%- endif %}
    request: Request,
    response: Response,
) -> ItemOut:
    row = (await connection.execute(INSERT, payload.model_dump())).one()
{%- if cookiecutter.use_worker %}
    # Enqueued only now: the autocommit INSERT is committed, so the job finds the row.
    # Redis down: a 503 (cache.FAILURES), the item stays created and unprocessed; a
    # client that retries creates a second one (see the README's "Background jobs").
    await process_item.kicker().with_broker(broker).kiq(row.id)
{%- endif %}
    response.headers["Location"] = request.app.url_path_for("get_item", item_id=str(row.id))
    return ItemOut.model_validate(row)


@reads.get("", response_model=list[ItemOut])
async def list_items(
    connection: ConnectionDep,
    limit: Annotated[
        int, Query(ge=1, le=100, description="How many items to return, at most 100")
    ] = 50,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="How many items to skip, in id order")
    ] = 0,
) -> list[ItemOut]:
    """Items in id order, one page at a time."""
    result = await connection.execute(SELECT_PAGE, {"limit": limit, "offset": offset})
    return [ItemOut.model_validate(row) for row in result]


@reads.get("/{item_id}", response_model=ItemOut, responses=problem_responses(404))
async def get_item(item_id: ItemId, connection: ConnectionDep) -> ItemOut:
    row = (await connection.execute(SELECT_ONE, {"item_id": item_id})).first()
    if row is None:
        raise not_found(item_id)
    return ItemOut.model_validate(row)


@writes.put("/{item_id}", response_model=ItemOut, responses=problem_responses(404))
async def update_item(item_id: ItemId, payload: ItemIn, connection: ConnectionDep) -> ItemOut:
    """Replace the item's fields; a field left out is cleared."""
    values = {"item_id": item_id, "new_name": payload.name, "new_description": payload.description}
    row = (await connection.execute(UPDATE, values)).first()
    if row is None:
        raise not_found(item_id)
    return ItemOut.model_validate(row)


@writes.delete(
    "/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404)
)
async def delete_item(item_id: ItemId, connection: ConnectionDep) -> Response:
    if (await connection.execute(DELETE, {"item_id": item_id})).first() is None:
        raise not_found(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)

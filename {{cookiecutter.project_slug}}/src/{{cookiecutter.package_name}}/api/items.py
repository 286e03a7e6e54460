"""Example resource: a small CRUD API over the ``items`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from {{ cookiecutter.package_name }}.db import SessionDep
from {{ cookiecutter.package_name }}.errors import problem_responses
from {{ cookiecutter.package_name }}.models import Item

# Every route reads or writes the database: a 503 when it is down, besides the
# statuses each route adds (422, 400, 413 and 500 are added for every route that can
# return them; see errors.py).
router = APIRouter(prefix="/items", tags=["items"], responses=problem_responses(503))

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
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str | None
    created_at: datetime


async def _get_or_404(session: SessionDep, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")
    return item


# OpenAPI links from a created item to the operations that take its id: clients (and the
# stateful contract test) can follow them without knowing the URL layout.
_ITEM_LINKS = {
    operation: {"operationId": operation, "parameters": {"item_id": "$response.body#/id"}}
    for operation in ("get_item", "update_item", "delete_item")
}


@router.post(
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
    payload: ItemIn, session: SessionDep, request: Request, response: Response
) -> Item:
    item = Item(**payload.model_dump())
    session.add(item)
    # expire_on_commit=False (main.py): the committed item keeps its values, and the
    # INSERT already returned what the server filled in (models.py).
    await session.commit()
    response.headers["Location"] = request.app.url_path_for("get_item", item_id=str(item.id))
    return item


@router.get("", response_model=list[ItemOut])
async def list_items(
    session: SessionDep,
    limit: Annotated[
        int, Query(ge=1, le=100, description="How many items to return, at most 100")
    ] = 50,
    offset: Annotated[
        int, Query(ge=0, le=1_000_000, description="How many items to skip, in id order")
    ] = 0,
) -> list[Item]:
    """Items in id order, one page at a time."""
    result = await session.scalars(select(Item).order_by(Item.id).limit(limit).offset(offset))
    return list(result)


@router.get("/{item_id}", response_model=ItemOut, responses=problem_responses(404))
async def get_item(item_id: ItemId, session: SessionDep) -> Item:
    return await _get_or_404(session, item_id)


@router.put("/{item_id}", response_model=ItemOut, responses=problem_responses(404))
async def update_item(item_id: ItemId, payload: ItemIn, session: SessionDep) -> Item:
    """Replace the item's fields; a field left out is cleared."""
    item = await _get_or_404(session, item_id)
    for key, value in payload.model_dump().items():
        setattr(item, key, value)
    await session.commit()
    return item


@router.delete(
    "/{item_id}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404)
)
async def delete_item(item_id: ItemId, session: SessionDep) -> Response:
    item = await _get_or_404(session, item_id)
    await session.delete(item)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

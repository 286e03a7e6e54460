"""Example resource: a small CRUD API over the ``items`` table."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from {{ cookiecutter.package_name }}.db import SessionDep
from {{ cookiecutter.package_name }}.models import Item

router = APIRouter(prefix="/items", tags=["items"])

# The id column is a 32-bit integer: larger values are a 422, not a database error.
ItemId = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)


class ItemOut(ItemIn):
    model_config = ConfigDict(from_attributes=True)

    id: int
    created_at: datetime


async def _get_or_404(session: SessionDep, item_id: int) -> Item:
    item = await session.get(Item, item_id)
    if item is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")
    return item


@router.post("", response_model=ItemOut, status_code=status.HTTP_201_CREATED)
async def create_item(payload: ItemIn, session: SessionDep) -> Item:
    item = Item(**payload.model_dump())
    session.add(item)
    await session.commit()
    await session.refresh(item)
    return item


@router.get("", response_model=list[ItemOut])
async def list_items(
    session: SessionDep,
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0, le=2**31 - 1),
) -> list[Item]:
    result = await session.scalars(select(Item).order_by(Item.id).limit(limit).offset(offset))
    return list(result)


@router.get("/{item_id}", response_model=ItemOut)
async def get_item(item_id: ItemId, session: SessionDep) -> Item:
    return await _get_or_404(session, item_id)


@router.put("/{item_id}", response_model=ItemOut)
async def update_item(item_id: ItemId, payload: ItemIn, session: SessionDep) -> Item:
    item = await _get_or_404(session, item_id)
    for key, value in payload.model_dump().items():
        setattr(item, key, value)
    await session.commit()
    await session.refresh(item)
    return item


@router.delete("/{item_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_item(item_id: ItemId, session: SessionDep) -> Response:
    item = await _get_or_404(session, item_id)
    await session.delete(item)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""The service's own API: include each resource's router here."""

from __future__ import annotations

from fastapi import APIRouter
{%- if cookiecutter.include_example_api %}

from {{ cookiecutter.package_name }}.api import items
{%- endif %}

api_router = APIRouter(prefix="/api")
{%- if cookiecutter.include_example_api %}
api_router.include_router(items.router)
{%- endif %}

"""The service's own API: include each resource's router here."""

from __future__ import annotations

from fastapi import APIRouter
{%- if cookiecutter.include_example_api %}

from {{ cookiecutter.package_name }}.api import items
{%- if cookiecutter.auth == "oidc" %}
from {{ cookiecutter.package_name }}.auth import require
from {{ cookiecutter.package_name }}.errors import problem_responses
{%- endif %}
{%- if cookiecutter.use_rate_limit %}
from {{ cookiecutter.package_name }}.rate_limit import limit
{%- endif %}
{%- endif %}

api_router = APIRouter(prefix="/api")
{%- if cookiecutter.include_example_api %}
{%- if cookiecutter.auth == "oidc" %}
# A valid token for every route (401 without), and a scope for each kind of use (403
# without): a client that may read cannot write.
api_router.include_router(
    items.reads, dependencies=[require("items:read")], responses=problem_responses(401, 403)
)
api_router.include_router(
    items.writes, dependencies=[require("items:write")], responses=problem_responses(401, 403)
)
{%- else %}
api_router.include_router(items.reads)
api_router.include_router(items.writes)
{%- endif %}
{%- if cookiecutter.use_rate_limit %}

# Each write has a policy of its own: the default quota, its own count per caller, and
# 503 while Redis is unavailable, rather than writes nobody counts (reads stay open). On
# an endpoint of your own it is a decorator: @limit("10/minute"), @limit(fail_closed=True).
for write in (items.create_item, items.update_item, items.delete_item):
    limit(fail_closed=True)(write)
{%- endif %}
{%- endif %}

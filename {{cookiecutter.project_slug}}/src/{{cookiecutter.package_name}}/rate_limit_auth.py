"""The rate limits' caller in a service that authenticates: the verified token's subject."""

from __future__ import annotations

from fastapi import Request

from {{ cookiecutter.package_name }}.auth import IssuerUnavailable, Rejected, verified

# Named: ruff formats an unnamed tuple in an except clause differently for Python 3.14.
NOT_VERIFIED = (Rejected, IssuerUnavailable)


async def subject(request: Request) -> str | None:
    """The verified caller's subject, or None for a request without a valid token.

    Asked on every limited route, before the route's own check, which then reuses the
    verification (auth.verified). It reads the header itself: through ``auth.bearer``
    every operation would need a token in OpenAPI. It splits the header as ``bearer``
    does, so both see the same token.
    """
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return (await verified(request, token)).subject
    except NOT_VERIFIED:
        return None  # keyed by address; the route's own check answers 401 or 503

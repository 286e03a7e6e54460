"""Who is calling: bearer access tokens from the company's OpenID Connect issuer.

This service is a resource server: it verifies tokens, it never issues them. A route
(or a router, see api/__init__.py) requires a valid token, and any scopes, with
``require("orders:write")``; a handler takes the caller as a ``CallerDep`` parameter.

A token is checked in this order, cheapest first, so that garbage costs no key
fetch and no signature check: its size (AUTH_MAX_TOKEN_BYTES), its shape and header,
an allowed asymmetric algorithm (``none`` and HMAC never: an RS256 public key used as
an HMAC secret is refused by the algorithm alone), its key by ``kid``, the signature,
then the claims (issuer, audience, expiry and not-before with AUTH_LEEWAY_SECONDS,
the required claims). joserfc does the JOSE work (the template's README says why
not PyJWT).

The issuer's keys (its JWKS) are fetched with httpx, in the event loop, found through
discovery unless AUTH_JWKS_URL names them. They are kept between fetches and fetched
again when a token names a kid they lack or they are older than
AUTH_JWKS_MAX_AGE_SECONDS, at most once per AUTH_JWKS_MIN_REFRESH_SECONDS whatever
tokens arrive (random kids cannot make this service hammer the issuer). A failed fetch
keeps the keys it had: a brief issuer outage changes nothing. With no keys at all (the
issuer was down when the worker started) a request that needs one is a 503 + Retry-After
naming the issuer, like any dependency down; readiness is not affected (health.py).

The token and its claims never reach a response, a log line or a span: a rejection says
which check failed, and the caller's subject and client id are logged (access_log.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, HTTPException, Request, Security, status
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes
from joserfc import jws
from joserfc.errors import (
    ExpiredTokenError,
    InvalidClaimError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import JWKRegistry, Key
from joserfc.jwt import JWTClaimsRegistry

from {{ cookiecutter.package_name }}.access_log import LOG_FIELDS
from {{ cookiecutter.package_name }}.errors import Dependency
from {{ cookiecutter.package_name }}.settings import Settings

logger = logging.getLogger(__name__)

# RFC 9864 renamed EdDSA to Ed25519; issuers still sign with the old name, and joserfc
# would warn on every such token.
warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)

DISCOVERY_PATH = "/.well-known/openid-configuration"
# With no keys at all, a fetch is tried at most this often (a worker that started while
# the issuer was down recovers within seconds, without a fetch per request).
RETRY_WITHOUT_KEYS_SECONDS = 5.0
# What joserfc raises for a JWK, or a compact token, it cannot read. Named tuples: ruff
# formats an unnamed one in an except clause differently for Python 3.14 (PEP 758).
UNREADABLE_KEY = (JoseError, ValueError, TypeError)
MALFORMED_TOKEN = (JoseError, ValueError, UnicodeError)

# How the token travels, and the scheme each protected operation declares in OpenAPI;
# document_security adds the issuer next to it. Never auto_error: every refusal is this
# module's problem.
BEARER = "bearer"
bearer = HTTPBearer(auto_error=False, scheme_name=BEARER, bearerFormat="JWT")
# The OpenAPI scheme that names the issuer (OpenID Connect discovery).
OPENID_CONNECT = "oidc"


def discovery_url(issuer: str) -> str:
    """Where the issuer describes itself (OpenID Connect Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


class IssuerUnavailable(Exception):
    """No key to check a token with, and the issuer cannot be reached for one."""


# The 503 it becomes (errors.py), named like the other dependencies.
ISSUER = Dependency("issuer", unavailable=lambda error: isinstance(error, IssuerUnavailable))


class Rejected(Exception):
    """A token that fails a check; ``reason`` labels the rejection counter."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


@dataclass(frozen=True)
class Caller:
    """Who a valid token speaks for. The claims stay out of repr (and so of logs)."""

    subject: str
    client_id: str | None
    scopes: frozenset[str]
    claims: dict[str, Any] = field(repr=False, compare=False)


def granted_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes and roles, wherever the issuer puts them.

    ``scope`` (a space-separated string: RFC 9068, Auth0, Okta, oidc-provider), ``scp``
    (Entra ID delegated tokens, Okta; a string or a list) and ``roles`` (Entra ID app
    roles, Keycloak with a top-level roles mapper): ``require`` checks their union.
    """
    granted: set[str] = set()
    for name in ("scope", "scp", "roles"):
        value = claims.get(name)
        if isinstance(value, str):
            granted.update(value.split())
        elif isinstance(value, list):
            granted.update(entry for entry in value if isinstance(entry, str))
    return frozenset(granted)


def caller_from(claims: dict[str, Any]) -> Caller:
    client = claims.get("client_id") or claims.get("azp")
    return Caller(
        subject=str(claims["sub"]),
        client_id=client if isinstance(client, str) else None,
        scopes=granted_scopes(claims),
        claims=claims,
    )


class IssuerKeys:
    """The issuer's public signing keys, fetched with httpx and kept between fetches."""

    def __init__(
        self,
        settings: Settings,
        http: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = settings.auth_issuer_url
        self.jwks_url = settings.auth_jwks_url
        self.min_refresh = settings.auth_jwks_min_refresh_seconds
        self.max_age = settings.auth_jwks_max_age_seconds
        self.http = http
        self.clock = clock
        self.keys: dict[str | None, Key] = {}
        self.fetched_at = -float("inf")  # the last fetch that succeeded
        self.tried_at = -float("inf")  # the last fetch, whatever its outcome
        self._lock = asyncio.Lock()

    async def get(self, kid: str | None) -> Key:
        """The key for a token's kid, fetching the set again if it may."""
        key = self._lookup(kid)
        stale = self.clock() - self.fetched_at > self.max_age
        # A key in hand never waits for a fetch another request has already started.
        if key is None or (stale and not self._lock.locked()):
            await self.refresh()
            key = self._lookup(kid)
        if key is not None:
            return key
        if not self.keys:
            raise IssuerUnavailable("the issuer's keys could not be fetched")
        raise Rejected("unknown_key", "the token is signed with a key the issuer does not publish")

    def _lookup(self, kid: str | None) -> Key | None:
        if kid is None and len(self.keys) == 1:
            # A token without kid from an issuer with one key: that key, and only then.
            return next(iter(self.keys.values()))
        return self.keys.get(kid)

    async def refresh(self) -> None:
        """Fetch the set unless a fetch was tried too recently; keep the old set on failure."""
        async with self._lock:  # one fetch at a time; those who waited see its result
            wait = self.min_refresh if self.keys else RETRY_WITHOUT_KEYS_SECONDS
            if self.clock() - self.tried_at < wait:
                return
            self.tried_at = self.clock()
            try:
                self.keys = await self.fetch()
            except (httpx.HTTPError, ValueError) as error:
                logger.warning(
                    "could not fetch the issuer's keys; keeping the %d known",
                    len(self.keys),
                    extra={"dependency": "issuer", "error": repr(error)},
                )
                return
            self.fetched_at = self.tried_at

    async def fetch(self) -> dict[str | None, Key]:
        """The issuer's signing keys by kid; raises when it cannot tell (a probe too)."""
        url = self.jwks_url or await self._discover()
        response = await self.http.get(url)
        response.raise_for_status()
        keys = signing_keys(response.json())
        if not keys:
            raise ValueError(f"no usable signing key at {url}")
        return keys

    async def _discover(self) -> str:
        response = await self.http.get(discovery_url(self.issuer))
        response.raise_for_status()
        document = response.json()
        # OpenID Connect Discovery 1.0, 4.3: a document for another issuer is not ours.
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise ValueError("the discovery document names another issuer")
        url = document.get("jwks_uri")
        if not isinstance(url, str):
            raise ValueError("the discovery document has no jwks_uri")
        self.jwks_url = url  # an issuer does not move its keys: discovered once
        return url

    async def check(self) -> None:
        """For /health/dependencies: the issuer publishes usable keys right now."""
        await self.fetch()


def signing_keys(document: object) -> dict[str | None, Key]:
    """The asymmetric signature keys of a JWKS; any other entry is skipped, never trusted."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("not a JWK set")
    keys: dict[str | None, Key] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") not in {"RSA", "EC", "OKP"}:
            continue  # "oct" (a shared secret) has no place in a public set
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = JWKRegistry.import_key(entry)
        except UNREADABLE_KEY:
            logger.warning("skipping a key the issuer publishes that cannot be read")
            continue
        if key.is_private:
            continue
        keys[entry.get("kid")] = key
    return keys


class Verifier:
    """Checks bearer tokens against the issuer's keys and this service's settings."""

    def __init__(
        self,
        settings: Settings,
        keys: IssuerKeys,
        on_reject: Callable[[str], None] = lambda _: None,
        on_accept: Callable[[str, str | None], None] = lambda _subject, _client: None,
    ) -> None:
        self.keys = keys
        self.max_bytes = settings.auth_max_token_bytes
        self.algorithms = frozenset(settings.auth_algorithms)
        self.registry = jws.JWSRegistry(algorithms=sorted(self.algorithms))
        required = {"iss", "aud", "exp", "sub", *settings.auth_required_claims}
        options: dict[str, Any] = {name: {"essential": True} for name in required}
        options["iss"] = {"essential": True, "value": settings.auth_issuer_url}
        options["aud"] = {"essential": True, "value": settings.auth_audience}
        self.leeway = settings.auth_leeway_seconds
        self.claims_options = options
        # Told the reason of every refusal (metrics_auth.py counts them), and who each
        # accepted token speaks for (for the request's span, when traces are on).
        self.on_reject = on_reject
        self.on_accept = on_accept

    async def verify(self, token: str) -> Caller:
        try:
            return await self._verify(token)
        except Rejected as rejected:
            self.on_reject(rejected.reason)
            raise

    async def _verify(self, token: str) -> Caller:
        if len(token) > self.max_bytes:
            raise Rejected("too_large", "the token is larger than this service accepts")
        try:
            signed = jws.extract_compact(token.encode("ascii"))
        except MALFORMED_TOKEN:
            raise Rejected("malformed", "the token is not a signed JWT") from None
        header = signed.headers()
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise Rejected("algorithm", "the token's algorithm is not accepted")
        kid = header.get("kid")
        key = await self.keys.get(kid if isinstance(kid, str) else None)
        try:
            valid = jws.validate_compact(signed, key, registry=self.registry)
        except JoseError:
            valid = False  # a key that cannot make this algorithm's signature
        if not valid:
            raise Rejected("bad_signature", "the token's signature does not verify")
        try:
            claims = json.loads(signed.payload)
        except ValueError:
            raise Rejected("malformed", "the token's claims are not JSON") from None
        if not isinstance(claims, dict):
            raise Rejected("malformed", "the token's claims are not a JSON object")
        self._check_claims(claims)
        return caller_from(claims)

    def _check_claims(self, claims: dict[str, Any]) -> None:
        registry = JWTClaimsRegistry(leeway=self.leeway, **self.claims_options)
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise Rejected("expired", "the token has expired") from None
        except MissingClaimError as error:
            raise Rejected(
                "missing_claim", f"the token lacks a required claim ({error.claim})"
            ) from None
        except InvalidClaimError as error:
            reason = {"iss": "wrong_issuer", "aud": "wrong_audience", "nbf": "not_yet_valid"}
            raise Rejected(
                reason.get(error.claim, "invalid_claim"),
                f"the token's {error.claim} claim is not accepted",
            ) from None


def challenge(
    error: str | None = None, description: str | None = None, scope: str | None = None
) -> str:
    """An RFC 6750 WWW-Authenticate value; no error code when no token came (section 3.1)."""
    parts = [
        f'{name}="{value}"'
        for name, value in (("error", error), ("error_description", description), ("scope", scope))
        if value
    ]
    return "Bearer " + ", ".join(parts) if parts else "Bearer"


async def authenticate(
    request: Request,
    security_scopes: SecurityScopes,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The caller of this request, with every scope the route requires, or a 401/403.

    Only the Authorization header counts: a token in the query string (``access_token``)
    would land in every proxy's and server's access log, so it is never looked at.
    """
    verifier: Verifier = request.app.state.verifier
    if credentials is None:
        verifier.on_reject("missing")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "a bearer token is required",
            headers={"WWW-Authenticate": challenge()},
        )
    try:
        caller = await verified(request, credentials.credentials)
    except Rejected as rejected:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            rejected.description,
            headers={"WWW-Authenticate": challenge("invalid_token", rejected.description)},
        ) from None
    # Into the access line and the span, never the token: see access_log.py.
    request.scope.setdefault("state", {})[LOG_FIELDS] = {
        "subject": caller.subject,
        "client_id": caller.client_id,
    }
    verifier.on_accept(caller.subject, caller.client_id)
    missing = [scope for scope in security_scopes.scopes if scope not in caller.scopes]
    if missing:
        verifier.on_reject("insufficient_scope")
        description = f"the token lacks the scope {' '.join(missing)}"
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            description,
            headers={
                "WWW-Authenticate": challenge(
                    "insufficient_scope", description, " ".join(security_scopes.scopes)
                )
            },
        )
    return caller


# This request's verified token (a Caller, or the Rejected it raised), in its state: a
# dependency that asks for the caller before the route's own check (a per-caller limit)
# and the check share one verification, and a refusal is counted once.
VERIFIED = "verified_token"


async def verified(request: Request, token: str) -> Caller:
    """The caller ``token`` speaks for, verified at most once per request."""
    state = request.scope.setdefault("state", {})
    outcome = state.get(VERIFIED)
    if outcome is None:
        verifier: Verifier = request.app.state.verifier
        try:
            outcome = await verifier.verify(token)
        except Rejected as rejected:
            outcome = rejected
        state[VERIFIED] = outcome
    if isinstance(outcome, Rejected):
        raise outcome
    caller: Caller = outcome
    return caller


def require(*scopes: str) -> DependsParam:
    """A dependency: a valid token carrying every one of ``scopes`` (none: any valid token)."""
    dependency: DependsParam = Security(authenticate, scopes=list(scopes))
    return dependency


# A handler's parameter for the caller: ``async def whoami(caller: CallerDep)``.
CallerDep = Annotated[Caller, require()]


def document_security(app: FastAPI, settings: Settings) -> None:
    """Name the issuer in the OpenAPI schema, as the alternative to each bearer requirement.

    The routes declare the ``bearer`` scheme (an HTTP bearer JWT) when they are built, at
    import, before any settings exist; the issuer is known only here. So the schema gets
    an ``openIdConnect`` scheme with the issuer's discovery URL (its token endpoint, the
    grants and scopes it supports), required with the same scopes as ``bearer`` on every
    operation that requires a token: generated clients and gateways learn where tokens
    come from and which scope each operation needs. ``bearer`` stays as the alternative
    (the same token, in the same header): /docs can take a pasted token with it, where
    the issuer is not reachable from the browser, and contract testers that do not
    speak OpenID Connect still see where the credential goes.
    """
    generate = app.openapi
    scheme = {
        "type": "openIdConnect",
        "openIdConnectUrl": discovery_url(settings.auth_issuer_url),
        "description": "An access token from the issuer, sent as a bearer token",
    }

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        if BEARER not in components.get("securitySchemes", {}):
            return schema  # no operation requires a token
        components["securitySchemes"] = {
            OPENID_CONNECT: scheme,
            **components["securitySchemes"],
        }
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                requirements: list[dict[str, list[str]]] = operation.get("security", [])
                issuer = [{OPENID_CONNECT: r[BEARER]} for r in requirements if BEARER in r]
                if issuer:
                    operation["security"] = [*issuer, *requirements]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_http_client(settings: Settings) -> httpx.AsyncClient:
    """The client that fetches discovery and keys: short timeouts, as a request may wait on it."""
    return httpx.AsyncClient(timeout=settings.auth_issuer_timeout_seconds, follow_redirects=False)


async def start(
    settings: Settings,
    http: httpx.AsyncClient,
    on_reject: Callable[[str], None] = lambda _: None,
    on_accept: Callable[[str, str | None], None] = lambda _subject, _client: None,
) -> Verifier:
    """The worker's verifier, its keys fetched now if the issuer answers (else on first use)."""
    verifier = Verifier(settings, IssuerKeys(settings, http), on_reject, on_accept)
    await verifier.keys.refresh()
    if not verifier.keys.keys:
        logger.error(
            "the issuer's keys are unavailable; protected routes answer 503 until they are"
        )
    return verifier

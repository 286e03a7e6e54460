"""Bearer tokens: what is accepted, every attack refused, and the issuer's keys handled.

The app fetches keys from the stand-in issuer of tests/plugins/auth.py over HTTP. Two
routes are added for these tests: one for any valid token, one that needs a scope.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from joserfc.jwk import Key, RSAKey

from {{ cookiecutter.package_name }}.auth import CallerDep, IssuerKeys, document_security, require
from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
from tests.plugins.auth import Issuer, signing_key

PROBLEM = "application/problem+json"
WHOAMI = "/test/whoami"
GUARDED = "/test/guarded"


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    @app.get(WHOAMI)
    async def whoami(caller: CallerDep) -> dict[str, str | None]:
        return {"subject": caller.subject, "client_id": caller.client_id}

    @app.get(GUARDED, dependencies=[require("things:write")])
    async def guarded() -> dict[str, str]:
        return {"status": "ok"}

    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token built by hand, as an attacker would: any header, any signature."""
    parts = [b64(json.dumps(header).encode()), b64(json.dumps(claims).encode())]
    return ".".join([*parts, b64(signature)])


def interval_passed(app: FastAPI) -> None:
    """As if the last key fetch (the one at start) was longer ago than the interval."""
    keys: IssuerKeys = app.state.verifier.keys
    keys.tried_at -= keys.min_refresh + 1


def claims_of(issuer: Issuer, **override: Any) -> dict[str, Any]:
    token = issuer.token(**override)
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return decoded


async def assert_refused(response: httpx.Response, error: str | None, token: str = "") -> None:
    """401 problem with the RFC 6750 challenge; nothing of the token in it."""
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    challenge = response.headers["www-authenticate"]
    if error is None:
        assert challenge == "Bearer"  # no token came: no error code (RFC 6750, 3.1)
    else:
        assert challenge.startswith(f'Bearer error="{error}"')
    for part in token.split("."):
        if len(part) >= 8:  # long enough not to match by chance
            assert part not in response.text
    assert "user-1" not in response.text  # no claim of the token either


async def test_a_valid_token_names_the_caller(client: AsyncClient) -> None:
    response = await client.get(WHOAMI)
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": "user-1", "client_id": "test-client"}


@pytest.mark.parametrize("kind", ["RS256", "PS256", "ES256", "EdDSA"])
async def test_each_asymmetric_algorithm_is_accepted(
    client: AsyncClient, issuer: Issuer, issuer_keys: dict[str, Key], kind: str
) -> None:
    token = issuer.token(key=issuer_keys[kind])
    assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200


async def test_no_token_is_a_401_without_an_error_code(client: AsyncClient) -> None:
    del client.headers["authorization"]
    await assert_refused(await client.get(WHOAMI), None)


async def test_a_token_in_the_query_string_is_ignored(client: AsyncClient, issuer: Issuer) -> None:
    token = issuer.token()
    del client.headers["authorization"]
    response = await client.get(WHOAMI, params={"access_token": token})
    await assert_refused(response, None, token)


@pytest.mark.parametrize(
    ("override", "case"),
    [
        ({"lifetime": -120}, "expired beyond the leeway"),
        ({"nbf": 2**31}, "not yet valid"),
        ({"iss": "https://attacker.example"}, "wrong issuer"),
        ({"aud": "another-service"}, "wrong audience"),
        ({"sub": None}, "no subject"),
    ],
)
async def test_a_token_with_bad_claims_is_refused(
    client: AsyncClient, issuer: Issuer, override: dict[str, Any], case: str
) -> None:
    token = issuer.token(**override)
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


async def test_expiry_within_the_leeway_is_accepted(client: AsyncClient, issuer: Issuer) -> None:
    token = issuer.token(lifetime=-10)  # AUTH_LEEWAY_SECONDS is 30
    assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 200


async def test_alg_none_is_refused(client: AsyncClient, issuer: Issuer) -> None:
    token = unsigned({"alg": "none", "kid": issuer.keys[0].kid}, claims_of(issuer))
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


async def test_hs256_signed_with_the_public_key_is_refused(
    client: AsyncClient, issuer: Issuer, issuer_keys: dict[str, Key]
) -> None:
    # The classic confusion: the issuer's public key, as published, used as an HMAC secret.
    public = issuer_keys["RS256"]
    assert isinstance(public, RSAKey)
    secret = public.as_pem(private=False)
    header = {"alg": "HS256", "kid": public.kid, "typ": "JWT"}
    signing_input = ".".join(
        [b64(json.dumps(header).encode()), b64(json.dumps(claims_of(issuer)).encode())]
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


async def test_a_signature_by_another_key_with_a_known_kid_is_refused(
    client: AsyncClient, issuer: Issuer
) -> None:
    forger = signing_key("RS256", issuer.keys[0].kid or "")
    token = issuer.token(key=forger)
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "a.b.c",
        "e30.e30.",  # {} as header: no algorithm
        b64(b'{"alg":"RS256"') + ".e30.sig",  # the header is not JSON
        "!!!.$$$.%%%",
        "a.b.c.d.e",  # the shape of an encrypted token (JWE)
    ],
)
async def test_malformed_tokens_are_refused(client: AsyncClient, token: str) -> None:
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


async def test_claims_that_are_not_json_are_refused(client: AsyncClient, issuer: Issuer) -> None:
    header, _, _ = issuer.token().split(".")
    token = f"{header}.{b64(b'not json')}.c2ln"
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)


async def test_a_huge_token_is_refused_before_it_is_parsed(
    client: AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token(padding="x" * 100_000)  # validly signed, 100 kB
    response = await client.get(WHOAMI, headers=bearer(token))
    await assert_refused(response, "invalid_token")
    assert "larger" in response.headers["www-authenticate"]


async def test_without_the_scope_a_valid_token_is_a_403(
    client: AsyncClient, issuer: Issuer
) -> None:
    token = issuer.token("things:read other:write")
    response = await client.get(GUARDED, headers=bearer(token))
    assert response.status_code == 403
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", '
        'error_description="the token lacks the scope things:write", scope="things:write"'
    )


@pytest.mark.parametrize(
    "claims",
    [{"scope": "things:read things:write"}, {"scp": ["things:write"]}, {"roles": ["things:write"]}],
)
async def test_the_scope_may_come_as_scope_scp_or_roles(
    client: AsyncClient, issuer: Issuer, claims: dict[str, Any]
) -> None:
    token = issuer.token(**{"scope": None, **claims})
    assert (await client.get(GUARDED, headers=bearer(token))).status_code == 200


async def test_an_unknown_kid_fetches_the_keys_once_then_is_refused(
    client: AsyncClient, app: FastAPI, issuer: Issuer
) -> None:
    interval_passed(app)
    before = issuer.key_fetches()
    token = issuer.token(key=signing_key("ES256", "not-published"))
    await assert_refused(await client.get(WHOAMI, headers=bearer(token)), "invalid_token", token)
    assert issuer.key_fetches() == before + 1


async def test_a_storm_of_random_kids_fetches_the_keys_at_most_once(
    client: AsyncClient, app: FastAPI, issuer: Issuer, issuer_keys: dict[str, Key]
) -> None:
    interval_passed(app)
    before = issuer.key_fetches()
    for _ in range(25):
        header = {"kid": uuid.uuid4().hex}
        token = issuer.token(key=issuer_keys["ES256"], header=header)
        assert (await client.get(WHOAMI, headers=bearer(token))).status_code == 401
    assert issuer.key_fetches() == before + 1  # the first unknown kid; none of the others


async def test_a_rotated_key_is_fetched_once_and_old_tokens_stay_valid(
    client: AsyncClient, app: FastAPI, issuer: Issuer
) -> None:
    interval_passed(app)
    old_token = issuer.token()
    rotated = signing_key("RS256", "rs256-2")
    issuer.keys = [rotated, *issuer.keys]  # the issuer publishes the new key beside the old
    before = issuer.key_fetches()
    new_token = issuer.token(key=rotated)
    for _ in range(3):
        assert (await client.get(WHOAMI, headers=bearer(new_token))).status_code == 200
    assert (await client.get(WHOAMI, headers=bearer(old_token))).status_code == 200
    assert issuer.key_fetches() == before + 1


async def test_the_keys_are_kept_while_the_issuer_is_down(
    client: AsyncClient, app: FastAPI, issuer: Issuer
) -> None:
    issuer.down = True
    keys: IssuerKeys = app.state.verifier.keys
    keys.fetched_at -= keys.max_age + 1  # old enough to be fetched again
    keys.tried_at = keys.fetched_at
    assert (await client.get(WHOAMI)).status_code == 200
    assert issuer.requests[-1] == "/jwks"  # it tried, failed, and kept what it had
    assert (await client.get(WHOAMI)).status_code == 200


async def test_an_issuer_down_at_start_is_a_503_not_a_crash_nor_unready(
    app: FastAPI, issuer: Issuer, client_headers: dict[str, str]
) -> None:
    issuer.down = True
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(
            transport=transport, base_url="http://test", headers=client_headers
        ) as http:
            response = await http.get(WHOAMI)
            assert response.status_code == 503
            assert response.headers["content-type"] == PROBLEM
            assert "issuer" in response.json()["detail"]
            assert "retry-after" in response.headers
            assert (await http.get("/health/ready")).status_code == 200
            dependencies = await http.get("/health/dependencies")
            assert dependencies.status_code == 503
            assert dependencies.json()["checks"]["issuer"]["status"] == "error"


async def test_discovery_naming_another_issuer_is_not_trusted(
    settings: Settings, issuer: Issuer
) -> None:
    other = settings.model_copy(update={"auth_issuer_url": issuer.url + "/"})
    async with httpx.AsyncClient() as http:
        keys = IssuerKeys(other, http)
        with pytest.raises(ValueError, match="another issuer"):
            await keys.fetch()


async def test_an_explicit_jwks_url_skips_discovery(settings: Settings, issuer: Issuer) -> None:
    explicit = settings.model_copy(update={"auth_jwks_url": issuer.jwks_url})
    async with httpx.AsyncClient() as http:
        assert set(await IssuerKeys(explicit, http).fetch()) == {key.kid for key in issuer.keys}
    assert issuer.requests == ["/jwks"]


async def test_refreshes_are_spaced_by_the_interval(settings: Settings, issuer: Issuer) -> None:
    now = [1000.0]
    async with httpx.AsyncClient() as http:
        keys = IssuerKeys(settings, http, clock=lambda: now[0])
        await keys.refresh()
        await keys.refresh()
        assert issuer.key_fetches() == 1
        now[0] += settings.auth_jwks_min_refresh_seconds + 1
        await keys.refresh()
        assert issuer.key_fetches() == 2


async def test_the_schema_names_the_issuer_and_each_operation_its_scopes(
    client: AsyncClient, issuer: Issuer
) -> None:
    schema = (await client.get("/openapi.json")).json()
    schemes = schema["components"]["securitySchemes"]
    # The URL the service itself discovers the issuer's keys by.
    assert schemes["oidc"]["type"] == "openIdConnect"
    assert schemes["oidc"]["openIdConnectUrl"] == f"{issuer.url}/.well-known/openid-configuration"
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    paths = schema["paths"]
    guarded = [{"oidc": ["things:write"]}, {"bearer": ["things:write"]}]
    assert paths[GUARDED]["get"]["security"] == guarded
    assert paths[WHOAMI]["get"]["security"] == [{"oidc": []}, {"bearer": []}]
    assert "security" not in paths["/health/live"]["get"]


def test_without_a_protected_route_the_schema_names_no_scheme(settings: Settings) -> None:
    app = FastAPI()

    @app.get("/open")
    async def open_route() -> dict[str, str]:
        return {}

    document_security(app, settings)
    assert "securitySchemes" not in app.openapi().get("components", {})


async def test_the_caller_is_in_the_access_line_and_the_token_nowhere(
    client: AsyncClient, issuer: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    token = issuer.token(sub="user-42")
    with caplog.at_level(logging.INFO):
        await client.get(WHOAMI, headers=bearer(token))
        await client.get(WHOAMI, headers=bearer(token + "x"))  # refused: a bad signature
    access = [r for r in caplog.records if getattr(r, "path", None) == WHOAMI]
    assert [(r.status, getattr(r, "subject", None)) for r in access] == [  # type: ignore[attr-defined]
        (200, "user-42"),
        (401, None),
    ]
    assert access[0].client_id == "test-client"  # type: ignore[attr-defined]
    for record in caplog.records:
        assert token.split(".")[2] not in json.dumps(record.__dict__, default=str)

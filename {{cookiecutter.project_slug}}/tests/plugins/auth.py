"""A stand-in issuer for the tests: keys made here, published over real HTTP.

The app under test finds the issuer by discovery and fetches its JWKS from a tiny HTTP
server on 127.0.0.1, as it would from the real one, so fetching, caching and refreshing
are exercised for real; the tests sign tokens with the private halves (joserfc, on
``cryptography``). Every request of the ``client`` fixture carries a token with every
scope; tests/test_auth.py builds the tokens an attacker would send.
tests/test_issuer.py of the template runs the app against a real OpenID provider.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, Key, KeyParameters, OKPKey, RSAKey

AUDIENCE = "test-audience"


def pytest_configure(config: pytest.Config) -> None:
    # The process's environment names an issuer, as a deployment's would: tests that build
    # Settings themselves need one, and a developer's own AUTH_* must not leak in.
    os.environ["AUTH_ISSUER_URL"] = "https://issuer.test"
    os.environ["AUTH_AUDIENCE"] = AUDIENCE
    os.environ.pop("AUTH_JWKS_URL", None)


@dataclass
class Issuer:
    """What the stand-in publishes, and what it was asked: the tests change and read it."""

    url: str = ""
    keys: list[Key] = field(default_factory=list)
    # Answer 503 to everything: the issuer is down.
    down: bool = False
    # Paths requested, in order (the tests count the key fetches).
    requests: list[str] = field(default_factory=list)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def key_fetches(self) -> int:
        return self.requests.count("/jwks")

    def token(
        self,
        scope: str | None = "",
        *,
        key: Key | None = None,
        header: Mapping[str, Any] | None = None,
        lifetime: int = 300,
        **claims: Any,
    ) -> str:
        """A token as the issuer would sign it; any claim or header field can be overridden."""
        signer = key or self.keys[0]
        now = int(time.time())
        payload = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "user-1",
            "client_id": "test-client",
            "iat": now,
            "exp": now + lifetime,
            **({"scope": scope} if scope is not None else {}),
            **claims,
        }
        algorithm = signer.get("alg") or "RS256"
        fields = {"alg": algorithm, "kid": signer.kid, **(header or {})}
        return jwt.encode(fields, payload, signer, algorithms=[fields["alg"]])


def signing_key(kind: str, kid: str) -> Key:
    parameters: KeyParameters = {"kid": kid, "use": "sig"}
    if kind == "RS256":
        return RSAKey.generate_key(2048, {**parameters, "alg": "RS256"})
    if kind == "PS256":
        return RSAKey.generate_key(2048, {**parameters, "alg": "PS256"})
    if kind == "ES256":
        return ECKey.generate_key("P-256", {**parameters, "alg": "ES256"})
    return OKPKey.generate_key("Ed25519", {**parameters, "alg": "EdDSA"})


def serve(issuer: Issuer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.requests.append(self.path)
            if issuer.down:
                self.send_error(503)
                return
            if self.path == "/.well-known/openid-configuration":
                body: object = {"issuer": issuer.url, "jwks_uri": issuer.jwks_url}
            elif self.path == "/jwks":
                body = {"keys": [key.as_dict(private=False) for key in issuer.keys]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the requests are in issuer.requests

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="session")
def issuer_keys() -> dict[str, Key]:
    """Made once: an RSA key takes a while to generate."""
    return {
        kind: signing_key(kind, f"{kind.lower()}-1")
        for kind in ("RS256", "PS256", "ES256", "EdDSA")
    }


@pytest.fixture(scope="session")
def issuer_server() -> Iterator[tuple[ThreadingHTTPServer, Issuer]]:
    issuer = Issuer()
    server = serve(issuer)
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server, issuer
    server.shutdown()
    server.server_close()


@pytest.fixture
def issuer(
    issuer_server: tuple[ThreadingHTTPServer, Issuer], issuer_keys: dict[str, Key]
) -> Issuer:
    """The stand-in issuer, as each test starts: up, publishing every key, no request seen."""
    state = issuer_server[1]
    state.keys = list(issuer_keys.values())
    state.down = False
    state.requests.clear()
    return state


def pytest_app_settings(request: pytest.FixtureRequest) -> Mapping[str, object]:
    issuer: Issuer = request.getfixturevalue("issuer")
    return {"auth_issuer_url": issuer.url, "auth_jwks_url": "", "auth_audience": AUDIENCE}


def scopes_required(app: FastAPI) -> str:
    """Every scope that some operation of the app requires, as its OpenAPI schema says."""
    paths = app.openapi()["paths"].values()
    operations = [operation for path in paths for operation in path.values()]
    required = {
        scope
        for operation in operations
        for requirement in operation.get("security", [])
        for scopes in requirement.values()
        for scope in scopes
    }
    return " ".join(sorted(required))


def pytest_client_headers(request: pytest.FixtureRequest) -> Mapping[str, str]:
    """The test client may call everything: its token has every scope a route requires."""
    issuer: Issuer = request.getfixturevalue("issuer")
    app: FastAPI = request.getfixturevalue("app")
    return {"Authorization": f"Bearer {issuer.token(scopes_required(app))}"}

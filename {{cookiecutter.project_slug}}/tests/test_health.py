from __future__ import annotations

from httpx import {% if cookiecutter.use_postgres or cookiecutter.use_redis %}ASGITransport, {% endif %}AsyncClient
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}

from {{ cookiecutter.package_name }}.main import create_app
from {{ cookiecutter.package_name }}.settings import Settings
{%- endif %}

{% if cookiecutter.use_postgres and cookiecutter.use_redis -%}
EXPECTED_CHECKS = {"database", "redis"}
{%- elif cookiecutter.use_postgres -%}
EXPECTED_CHECKS = {"database"}
{%- elif cookiecutter.use_redis -%}
EXPECTED_CHECKS = {"redis"}
{%- else -%}
EXPECTED_CHECKS: set[str] = set()
{%- endif %}


async def test_live_touches_no_dependency(client: AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_every_check_ok(client: AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == EXPECTED_CHECKS
    assert all(check["status"] == "ok" for check in body["checks"].values())
{%- if cookiecutter.use_postgres or cookiecutter.use_redis %}


async def test_ready_is_503_naming_the_unreachable_dependency(settings: Settings) -> None:
    # Port 1 on loopback: nothing listens there, so each check fails fast.
    broken = settings.model_copy(
        update={
{%- if cookiecutter.use_postgres %}
            "database_url": "postgresql+asyncpg://app:app@127.0.0.1:1/app",
{%- endif %}
{%- if cookiecutter.use_redis %}
            "redis_url": "redis://127.0.0.1:1/0",
{%- endif %}
        }
    )
    app = create_app(broken)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://test") as http:
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "error"
    assert set(body["checks"]) == EXPECTED_CHECKS
    assert all(check["status"] != "ok" for check in body["checks"].values())
    assert live.status_code == 200
{%- endif %}

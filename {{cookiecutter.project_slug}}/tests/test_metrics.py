"""/metrics: Prometheus text with bounded labels."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI
from httpx import AsyncClient
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.settings import Settings

from .test_access_log import access_lines, log_lines, serve


def add_nested_route(app: FastAPI) -> None:
    inner = APIRouter(prefix="/widgets")

    @inner.get("/{widget_id}")
    async def get_widget(widget_id: int) -> dict[str, int]:
        return {"id": widget_id}

    outer = APIRouter(prefix="/outer")
    outer.include_router(inner)
    app.include_router(outer)


# (sample name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(client: AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def requests_for(samples: Samples, route: str) -> float:
    key = ("http_requests_total", (("method", "GET"), ("route", route), ("status", "200")))
    return samples.get(key, 0.0)


async def test_requests_are_counted_by_route_template(app: FastAPI, client: AsyncClient) -> None:
    add_nested_route(app)
    before = requests_for(await scrape(client), "/outer/widgets/{widget_id}")
    for widget_id in range(1, 8):
        assert (await client.get(f"/outer/widgets/{widget_id}")).status_code == 200
    samples = await scrape(client)
    assert requests_for(samples, "/outer/widgets/{widget_id}") - before == 7
    names = {name for name, _ in samples}
    assert "http_request_duration_seconds_bucket" in names
    assert "http_requests_in_progress" in names
    labels = {value for _, pairs in samples for _, value in pairs}
    raw_paths = [value for value in labels if value.startswith("/outer/widgets/1")]
    assert raw_paths == []


async def test_unmatched_paths_share_one_label(client: AsyncClient) -> None:
    for n in range(5):
        assert (await client.get(f"/scanner/{n}/wp-login.php")).status_code == 404
    await client.request("FROBNICATE", "/scanner")
    samples = await scrape(client)
    labels = {value for _, pairs in samples for _, value in pairs}
    assert "unmatched" in labels
    assert not [value for value in labels if "scanner" in value or value == "FROBNICATE"]
    other = (("method", "OTHER"), ("route", "unmatched"), ("status", "404"))
    assert ("http_requests_total", other) in samples


async def test_metrics_stay_out_of_the_openapi_schema(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


@pytest.mark.parametrize(("log_probes", "expected"), [(False, 0), (True, 1)])
async def test_scrapes_are_access_logged_only_when_asked(
    settings: Settings, capsys: pytest.CaptureFixture[str], log_probes: bool, expected: int
) -> None:
    # Polled like the health probes, so it is one of them for the access log.
    async with serve(settings, access_log_probes=log_probes) as http:
        await http.get("/metrics")
    assert len(access_lines(log_lines(capsys))) == expected


async def test_requests_in_progress_count_up_while_handled_and_back_down(
    app: FastAPI, client: AsyncClient
) -> None:
    seen: list[float] = []

    @app.get("/busy")
    async def busy() -> None:
        seen.append((await scrape(client))[("http_requests_in_progress", ())])

    # Each scrape counts itself: `before` is one more than what else is in flight.
    before = (await scrape(client))[("http_requests_in_progress", ())]
    assert (await client.get("/busy")).status_code == 200
    # Inside: /busy and the scrape it makes; after: only the last scrape itself.
    assert seen == [before + 1]
    assert (await scrape(client))[("http_requests_in_progress", ())] == before

"""Rate limits (use_rate_limit) on a running stack, for either server: one count for every
process of every container, and what the limits do while Redis is away."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from tests.compose import ComposeStack

# The limiter's one WARNING per outage, per worker process (rate_limit.py).
UNCHECKED = "rate limits are not checked while Redis is unavailable"


@contextmanager
def limited_replicas(stack: ComposeStack, rate: int) -> Iterator[list[str]]:
    """The stack's app as two containers (each of WEB_CONCURRENCY workers) at ``rate`` a
    minute, on the stack's one Redis; their URLs. Afterwards one container at the former
    limit again."""
    former = stack.dotenv()["RATE_LIMIT_DEFAULT"]
    scale = ["up", "--detach", "--wait", "--no-deps", "--scale"]
    stack.set_env_file("RATE_LIMIT_DEFAULT", f"{rate}/minute")
    try:
        stack.compose(*scale, "app=2", "app")
        ports = [
            stack.compose("port", "--index", str(index), "app", "8000").stdout.strip()
            for index in (1, 2)
        ]
        yield [f"http://127.0.0.1:{port.rsplit(':', 1)[1]}" for port in ports]
    finally:
        stack.set_env_file("RATE_LIMIT_DEFAULT", former)
        stack.compose(*scale, "app=1", "app")


def assert_one_count(urls: list[str], rate: int, headers: dict[str, str]) -> str:
    """4 x ``rate`` concurrent reads from one client (one address, and with auth=oidc one
    token's subject: ``headers``), spread over the containers: exactly
    ``rate`` answered 200 in total (not ``rate`` per process), the others 429 with the
    problem's fields. The figure: each container's share."""
    statuses: dict[str, list[int]] = {url: [] for url in urls}

    def call(index: int) -> None:
        url = urls[index % len(urls)]
        # A connection per request, so each container's workers share the requests.
        statuses[url].append(httpx.get(f"{url}/api/items", timeout=10, headers=headers).status_code)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(call, range(4 * rate)))
    every = [status for answers in statuses.values() for status in answers]
    assert sorted(set(every)) == [200, 429]
    assert every.count(200) == rate, {url: Counter(a) for url, a in statuses.items()}
    assert all(429 in answers for answers in statuses.values())
    refused = httpx.get(f"{urls[0]}/api/items", timeout=10, headers=headers)
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["RateLimit-Policy"] == f'"default";q={rate};w=60'
    assert refused.headers["RateLimit"].startswith('"default";r=0;t=')
    return ", ".join(f"{Counter(a)[200]} of {len(a)} allowed" for a in statuses.values())


# rate_limit_decisions_total's samples of the items' list read passed unchecked.
_UNCHECKED_READS = re.compile(
    r'^rate_limit_decisions_total\{(?=[^}]*decision="unchecked")(?=[^}]*route="/api/items")'
    r"[^}]*\} (\S+)$",
    re.MULTILINE,
)


def unchecked_reads(stack: ComposeStack) -> float:
    """The reads of /api/items let through unchecked so far, every worker's (/metrics)."""
    return sum(float(value) for value in _UNCHECKED_READS.findall(stack.get("/metrics").text))


# The processes uvicorn's supervisor spawns (multiprocessing's spawn start method gives
# each this argument). Split, or this command's own line would be counted.
_COUNT_WORKERS = (
    "import pathlib; print(sum(b'--multiprocessing' b'-fork' in p.read_bytes()"
    " for p in pathlib.Path('/proc').glob('[0-9]*/cmdline')))"
)


def server_workers(stack: ComposeStack) -> int:
    """How many uvicorn worker processes the app container runs."""
    return int(stack.compose("exec", "-T", "app", "python", "-c", _COUNT_WORKERS).stdout)

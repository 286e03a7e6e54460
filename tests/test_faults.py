"""Dependencies failing under load: every answer is a success or a 503, never a 500 or
a dropped connection, and the service recovers by itself.

One default stack per server choice; the cases run on it one after another, each with
concurrent clients running before, during and after the fault, every status and every
transport error counted. The uvicorn stack has the background worker: a flow of jobs runs
through a Redis restart and a pause, and each job's effect is counted in the database.
Both stacks have rate limits on (the uvicorn variant has them off elsewhere), so the
limiter is in every read's path during the Redis faults, and the uvicorn stack is where
one count across processes is checked for that server.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.compose import STACKS_KEY, ComposeStack
from tests.helpers import VARIANTS, bake, require_docker, run
from tests.rate_limits import assert_one_count, limited_replicas, server_workers

pytestmark = [pytest.mark.docker, pytest.mark.xdist_group("faults")]

CLIENTS = 16
# Short, so a hung server is given up on in seconds: the server cancels a statement after
# 2 s, the client gives up 2 s later (db.CLIENT_TIMEOUT_GRACE_SECONDS).
FAST_FAILURE_SETTINGS = {
    "DATABASE_STATEMENT_TIMEOUT_SECONDS": "2",
    "DATABASE_POOL_TIMEOUT_SECONDS": "2",
    "REDIS_TIMEOUT_SECONDS": "2",
    "HEALTH_CHECK_TIMEOUT_SECONDS": "1",
    # The worker's, where there is one (the uvicorn variant): a job whose read or
    # acknowledgement an outage lost is handed out again within seconds, not ten minutes.
    "WORKER_REDELIVERY_SECONDS": "3",
}
# Per worker: the request pool (10, no overflow) and readiness' own connection.
WORKERS = 2
MAX_APP_CONNECTIONS = WORKERS * (10 + 0 + 1)


@pytest.fixture(scope="module", params=["default", "uvicorn"])
def fault_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    require_docker()
    variant: str = request.param
    project = bake(
        tmp_path_factory.mktemp(f"faults-{variant}"),
        **{**VARIANTS[variant], "use_rate_limit": True},
        project_name=f"Faults {variant}",
    )
    with (project / ".env").open("a") as env:
        env.writelines(f"{key}={value}\n" for key, value in FAST_FAILURE_SETTINGS.items())
    stack = ComposeStack(project, f"faults-{variant}")
    try:
        stack.up(build=True)
        yield stack
    finally:
        stack.down()


@dataclass
class Load:
    """Concurrent clients, each with its own connection, recording every outcome."""

    urls: list[str]
    headers: dict[str, str]  # the token of an auth=oidc bake
    outcomes: list[tuple[float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client(self, index: int) -> None:
        url = self.urls[index % len(self.urls)]
        with httpx.Client(timeout=30, headers=self.headers) as http:
            while not self.stop.is_set():
                try:
                    outcome = str(http.get(url).status_code)
                except httpx.HTTPError as error:  # a dropped or refused connection
                    outcome = type(error).__name__
                with self.lock:
                    self.outcomes.append((time.monotonic(), outcome))

    def since(self, moment: float) -> Counter[str]:
        with self.lock:
            return Counter(outcome for at, outcome in self.outcomes if at >= moment)


def status_of(stack: ComposeStack, path: str) -> int:
    try:
        return stack.get(path, timeout=10).status_code
    except httpx.HTTPError:
        return 0


def failing_dependencies(stack: ComposeStack) -> tuple[int, frozenset[str]]:
    """The status of /health/dependencies and the checks its body reports as not ok."""
    try:
        response = stack.get("/health/dependencies", timeout=10)
    except httpx.HTTPError:
        return 0, frozenset()
    checks = response.json().get("checks", {}) if response.status_code in {200, 503} else {}
    return response.status_code, frozenset(n for n, c in checks.items() if c["status"] != "ok")


def app_connections(stack: ComposeStack) -> int:
    count = stack.compose(
        "exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-tAc",
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app'"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )  # fmt: skip
    return int(count.stdout.strip())


def terminate_app_backends(stack: ComposeStack) -> None:
    stack.compose(
        "exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-tAc",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'app'"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )  # fmt: skip


# A fault, given the stack and an event set once /health/dependencies reported it.
Fault = Callable[[ComposeStack, threading.Event], None]


def paused(service: str, seconds: float) -> Fault:
    def fault(stack: ComposeStack, _reported: threading.Event) -> None:
        stack.compose("pause", service)
        time.sleep(seconds)
        stack.compose("unpause", service)

    return fault


def restarted(service: str) -> Fault:
    """Stopped, and started again once /health/dependencies has reported it (within 15
    s). `compose restart` can be over in under a second, before any probe looks, and a
    test of what the probe says would then pass or fail by chance."""

    def fault(stack: ComposeStack, reported: threading.Event) -> None:
        stack.compose("stop", service)
        reported.wait(timeout=15)
        stack.compose("start", service)

    return fault


def db_disconnected(stack: ComposeStack, _reported: threading.Event) -> None:
    network = f"{stack.name}_default"
    container = stack.container_id("db")
    run(["docker", "network", "disconnect", network, container], stack.project)
    time.sleep(5)
    run(["docker", "network", "connect", "--alias", "db", network, container], stack.project)


# name: (the fault, the dependency /health/dependencies must report down during it, or
# None where the dependency stays available and it rightly stays 200)
CASES: dict[str, tuple[Fault, str | None]] = {
    "postgres restarted": (restarted("db"), "database"),
    "postgres backends terminated": (lambda stack, _: terminate_app_backends(stack), None),
    "postgres hung past the statement timeout": (paused("db", 6), "database"),
    "postgres cut off the network": (db_disconnected, "database"),
    "redis restarted": (restarted("redis"), "redis"),
    "redis hung": (paused("redis", 4), "redis"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failing_dependency_under_load_gives_only_200_or_503(
    fault_stack: ComposeStack,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
    case: str,
) -> None:
    stack = fault_stack
    request.node.stash[STACKS_KEY] = [stack]
    fault, dependency = CASES[case]
    created = stack.post("/api/items", json={"name": "under load"}, timeout=10)
    assert created.status_code == 201, created.text
    # Reads of the database, and the dependency check, which also reads Redis.
    load = Load(
        [stack.url(f"/api/items/{created.json()['id']}"), stack.url("/health/dependencies")],
        stack.auth,
    )
    memory_before = stack.memory_bytes("app") / 2**20
    probes: list[tuple[float, int, frozenset[str]]] = []
    readiness: list[int] = []
    clients = [threading.Thread(target=load.client, args=(i,)) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    try:
        time.sleep(2)
        healthy_before = load.since(0)
        fault_started = time.monotonic()
        fault_over = threading.Event()
        reported = threading.Event()  # /health/dependencies named the dependency

        # As a monitor and the kubelet poll them during the fault, each on its own
        # thread: a restart can be over in a second, so neither may wait for the other.
        def probe_dependencies() -> None:
            while not fault_over.is_set():
                probe = (time.monotonic(), *failing_dependencies(stack))
                probes.append(probe)
                if dependency in probe[2]:
                    reported.set()
                time.sleep(0.2)

        def probe_readiness() -> None:
            while not fault_over.is_set():
                readiness.append(status_of(stack, "/health/ready"))
                time.sleep(0.2)

        probers = [
            threading.Thread(target=probe_dependencies),
            threading.Thread(target=probe_readiness),
        ]
        for prober in probers:
            prober.start()
        fault(stack, reported)
        fault_ended = time.monotonic()
        fault_over.set()
        for prober in probers:
            prober.join(timeout=60)
        # Within a few seconds of the dependency's return, only 200s.
        deadline = time.monotonic() + 30
        while failing_dependencies(stack)[0] != 200:
            assert time.monotonic() < deadline, "the dependencies did not come back"
            time.sleep(0.2)
        recovered = time.monotonic()
        time.sleep(3)
        settled = time.monotonic()
        time.sleep(3)
    finally:
        load.stop.set()
        for client in clients:
            client.join(timeout=60)

    everything = load.since(0)
    after = load.since(settled)
    first_503 = next((at for at, outcome in load.outcomes if outcome == "503"), None)
    record_property(
        "figure",
        f"{stack.name.split('-')[2]} {case}: {sum(everything.values())} requests, "
        f"{everything['503']} x 503, first 503 "
        + (f"{first_503 - fault_started:.1f} s after the fault" if first_503 else "never")
        + f", dependencies answer again {recovered - fault_ended:.1f} s after it ended",
    )
    assert set(healthy_before) == {"200"}, f"not healthy before the fault: {healthy_before}"
    assert set(everything) <= {"200", "503"}, f"only 200 or 503 expected: {everything}"
    assert set(after) == {"200"}, f"still failing after recovery: {after}"
    # A shared dependency's fault never takes the instance out of the load balancer.
    assert readiness and set(readiness) == {200}, Counter(readiness)
    down = [failing for _, status, failing in probes if status == 503]
    if dependency is not None:
        assert down, "/health/dependencies never reported the fault"
        # It names the dependency that failed, and only that one.
        assert set(down) == {frozenset({dependency})}, down
    assert app_connections(stack) <= MAX_APP_CONNECTIONS
    memory_after = stack.memory_bytes("app") / 2**20
    record_property("figure", f"{case}: app memory {memory_before:.0f} -> {memory_after:.0f} MiB")
    assert memory_after < memory_before * 1.5 + 20, "app memory grew during the fault"


# --- background jobs through Redis faults (the uvicorn variant has the worker) -------------

# Jobs enqueued (POST /api/items answered 201) in one flow, and after how many accepted
# each fault starts: the restart a third in, the pause two thirds in.
JOBS = 1000
RESTART_AFTER, PAUSE_AFTER = 300, 600
# A client's wait after a 503 before it tries again, as a well-behaved client backs off.
CLIENT_BACKOFF_SECONDS = 0.2

# Every change of an item's processed_at, recorded by PostgreSQL itself: the job's effect
# counted where it happens, whatever the worker logs. A second run of an idempotent job
# updates no row and adds nothing here; a job that wrote twice adds two rows.
EFFECTS_TABLE = """
CREATE TABLE fault_test_effects (item_id bigint NOT NULL);
CREATE FUNCTION fault_test_effect() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO fault_test_effects VALUES (NEW.id); RETURN NULL; END $$;
CREATE TRIGGER fault_test_effect AFTER UPDATE OF processed_at ON items
FOR EACH ROW EXECUTE FUNCTION fault_test_effect();
"""
DROP_EFFECTS_TABLE = """
DROP TRIGGER IF EXISTS fault_test_effect ON items;
DROP FUNCTION IF EXISTS fault_test_effect();
DROP TABLE IF EXISTS fault_test_effects;
"""


def psql(stack: ComposeStack, query: str) -> str:
    command = ["exec", "-T", "db", "psql", "-U", "app", "-d", "app", "-v", "ON_ERROR_STOP=1"]
    return stack.compose(*command, "-tAc", query).stdout


@dataclass
class JobFlow:
    """Clients creating items (each enqueues its job), every answer kept by item name."""

    url: str
    headers: dict[str, str]  # the token of an auth=oidc bake
    run: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    answers: dict[str, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0

    def client(self) -> None:
        with httpx.Client(timeout=30, headers=self.headers) as http:
            while not self.stop.is_set():
                with self.lock:
                    name = f"{self.run}-{self.sent}"
                    self.sent += 1
                try:
                    answer = str(http.post(self.url, json={"name": name}).status_code)
                except httpx.HTTPError as error:  # a dropped or refused connection
                    answer = type(error).__name__
                with self.lock:
                    self.answers[name] = answer
                if answer != "201":
                    time.sleep(CLIENT_BACKOFF_SECONDS)

    def accepted(self) -> list[str]:
        with self.lock:
            return [name for name, answer in self.answers.items() if answer == "201"]

    def refused(self) -> list[str]:
        with self.lock:
            return [name for name, answer in self.answers.items() if answer != "201"]

    def wait_accepted(self, count: int, deadline: float) -> None:
        while len(self.accepted()) < count:
            assert time.monotonic() < deadline, f"{len(self.accepted())} of {count} accepted"
            time.sleep(0.05)


def job_effects(stack: ComposeStack, run: str) -> dict[str, tuple[bool, int]]:
    """Each of the run's items: whether it is processed, and how many times it was."""
    rows = psql(
        stack,
        "SELECT i.name, i.processed_at IS NOT NULL, count(e.item_id) FROM items i"
        " LEFT JOIN fault_test_effects e ON e.item_id = i.id"
        f" WHERE i.name LIKE '{run}-%' GROUP BY i.id",
    )
    table = {}
    for line in rows.split():
        name, processed, effects = line.split("|")
        table[name] = (processed == "t", int(effects))
    return table


@pytest.mark.parametrize("fault_stack", ["uvicorn"], indirect=True)
def test_jobs_flow_through_a_redis_restart_and_pause_each_done_once(
    fault_stack: ComposeStack,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    """1,000 jobs enqueued while Redis is restarted, then paused: the API answers 201 or
    503, never a 500; the worker reads again by itself (never restarted); every accepted
    job is done, its effect exactly once.

    A 503 is a write refused while Redis is away: mostly by the rate limits, which this
    stack has on and which fail closed for writes, before the route runs; or an enqueue
    that failed after the insert (the item exists unprocessed; the generated suite's
    test_jobs.py checks that 503 with only the queue down). Its client (here, as a client
    should, after a short back-off) sends a new item, which is the job counted. A refused
    item's job may still run, at most once: during a pause the enqueue can reach Redis
    after the route gave up waiting for its answer.
    """
    stack = fault_stack
    request.node.stash[STACKS_KEY] = [stack]
    worker_before = stack.inspect("worker")
    psql(stack, DROP_EFFECTS_TABLE + EFFECTS_TABLE)
    flow = JobFlow(stack.url("/api/items"), stack.auth)
    clients = [threading.Thread(target=flow.client) for _ in range(8)]
    started = time.monotonic()
    deadline = started + 180
    for client in clients:
        client.start()
    try:
        flow.wait_accepted(RESTART_AFTER, deadline)
        reported = threading.Event()  # the API has refused an enqueue: Redis is down
        refused_before = len(flow.refused())

        def watch() -> None:
            while not reported.is_set() and time.monotonic() < deadline:
                if len(flow.refused()) > refused_before:
                    reported.set()
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        restarted("redis")(stack, reported)
        reported.set()
        watcher.join()
        flow.wait_accepted(PAUSE_AFTER, deadline)
        paused("redis", 4)(stack, reported)
        flow.wait_accepted(JOBS, deadline)
    finally:
        flow.stop.set()
        for client in clients:
            client.join(timeout=60)
    flow_seconds = time.monotonic() - started
    try:
        accepted, refused = flow.accepted(), flow.refused()
        while True:
            effects = job_effects(stack, flow.run)
            undone = [name for name in accepted if not effects[name][0]]
            if not undone or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        done_seconds = time.monotonic() - started
    finally:
        psql(stack, DROP_EFFECTS_TABLE)

    answers = Counter(flow.answers.values())
    assert set(answers) <= {"201", "503"}, f"only 201 or 503 expected: {answers}"
    assert not undone, f"{len(undone)} accepted jobs not done, e.g. {undone[:5]}"
    twice = {name: effects[name][1] for name in accepted if effects[name][1] != 1}
    assert not twice, f"accepted jobs whose effect is not exactly once: {twice}"
    # A refused item may have no row: with rate limits on, the route fails closed and
    # refuses a write before it runs while Redis is away.
    refused_twice = {n: effects[n][1] for n in refused if effects.get(n, (False, 0))[1] > 1}
    assert not refused_twice, f"refused items processed more than once: {refused_twice}"
    worker_after = stack.inspect("worker")
    # Read again by itself: the same process, never restarted by Docker.
    assert worker_after["RestartCount"] == 0, stack.logs_tail()
    assert worker_after["State"]["StartedAt"] == worker_before["State"]["StartedAt"]
    assert answers["503"], "the API never refused an enqueue: was Redis down at all?"

    runs: Counter[int] = Counter()  # the job's runs per item, as the worker logged them
    logs = stack.compose("logs", "--no-color", "--no-log-prefix", "worker").stdout
    for line in logs.splitlines():
        entry = json.loads(line) if line.startswith("{") else {}
        if entry.get("message") in {"item processed", "item needed no processing"}:
            runs[entry["item_id"]] += 1
    record_property(
        "figure",
        f"jobs through a redis restart and pause: {len(accepted)} accepted, "
        f"{answers['503']} x 503 ({sum(effects.get(n, (False, 0))[1] for n in refused)} of "
        "those ran anyway), "
        f"{sum(runs.values()) - len(runs)} redelivered runs with no effect; "
        f"flow {flow_seconds:.1f} s, all done {done_seconds:.1f} s after the start",
    )


RATE_LIMIT = 20


# The gunicorn server's count across processes is checked on tests/test_failure_modes.py's
# stack; this is the other server's.
@pytest.mark.parametrize("fault_stack", ["uvicorn"], indirect=True)
def test_one_client_gets_the_limit_in_total_across_uvicorn_processes(
    fault_stack: ComposeStack,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    """Two containers of WEB_CONCURRENCY (2) uvicorn workers each, one count."""
    request.node.stash[STACKS_KEY] = [fault_stack]
    assert server_workers(fault_stack) == int(fault_stack.dotenv()["WEB_CONCURRENCY"]) == 2
    with limited_replicas(fault_stack, RATE_LIMIT) as urls:
        shares = assert_one_count(urls, RATE_LIMIT, fault_stack.auth)
    record_property("figure", f"rate limit across 2 containers x 2 uvicorn workers: {shares}")

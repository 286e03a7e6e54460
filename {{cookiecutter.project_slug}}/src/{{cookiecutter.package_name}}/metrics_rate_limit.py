"""/metrics for the rate limits: the requests of limited routes, by the limiter's decision."""

from __future__ import annotations

from prometheus_client import Counter

# "unchecked": passed without a count while Redis was unavailable (fail-open); a route
# that fails closed is counted by dependency_failures_total{dependency="redis"} instead.
DECISIONS = Counter(
    "rate_limit_decisions",
    "Requests of rate-limited routes by decision: allowed, limited or unchecked",
    ["route", "decision"],
)


def count_decision(route: str, decision: str) -> None:
    DECISIONS.labels(route, decision).inc()

"""Prometheus metrics of the backend-router (served on ``METRICS_PORT``, default 9103). Per-backend series
count only events that happened while this process ran (the replay at start is not re-counted)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

SELECTIONS = Counter("hermes_router_selections_total", "Backends chosen", ["backend", "strategy"])
FAILOVERS = Counter(
    "hermes_router_failovers_total", "Attempts after a failed one, by the failed backend", ["from_backend"]
)
ABANDONED = Counter("hermes_router_abandoned_total", "Jobs the router gave up on", ["error_code"])
DEFERRED = Counter("hermes_router_deferred_total", "Jobs that had to wait, by reason", ["reason"])
QUEUED = Gauge("hermes_router_queued_jobs", "Jobs waiting for a backend, by priority", ["priority"])
DISPATCH_SECONDS = Histogram(
    "hermes_router_dispatch_seconds",
    "Job queued (event time) to backend selected, seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 300),
)
ROUND_SECONDS = Histogram(
    "hermes_router_round_seconds",
    "One dispatch round (read, decide, append), seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)

BACKEND_REQUESTS = Counter(
    "hermes_backend_requests_total",
    "Finished executions; outcome completed or the ExecutionFailed error_code",
    ["backend", "outcome"],
)
BACKEND_FAILURES = Counter("hermes_backend_failures_total", "Failed executions by reason", ["backend", "reason"])
BACKEND_LATENCY = Histogram(
    "hermes_backend_latency_seconds", "Execution latency, request to last byte", ["backend"], buckets=_LATENCY_BUCKETS
)
BACKEND_TOKENS = Counter(
    "hermes_backend_tokens_total", "Tokens per backend; kind prompt or completion", ["backend", "kind"]
)
BACKEND_COST = Counter("hermes_backend_cost_cents_total", "Recorded cost in cents", ["backend", "project"])
BACKEND_HEALTH = Gauge(
    "hermes_backend_health",
    "1 healthy or degraded (failing, below the threshold), 0 unhealthy or no_edge (no live edge serves it), -1 unknown",
    ["backend"],
)
BACKEND_EDGE_LIVE = Gauge(
    "hermes_backend_edge_live",
    "1 while an edge of the backend sent a heartbeat or probe reply within HERMES_EDGE_STALE_SECONDS, else 0",
    ["backend"],
)
BACKEND_IN_FLIGHT = Gauge("hermes_backend_in_flight", "Jobs dispatched and not finished", ["backend"])
BACKEND_ENABLED = Gauge("hermes_backend_enabled", "1 enabled, 0 disabled", ["backend"])
SPENT_TODAY = Gauge("hermes_budget_spent_today_cents", "Recorded cost since 00:00 UTC, cents")
DAILY_BUDGET = Gauge("hermes_budget_daily_cents", "Configured daily budget, cents (0: no daily budget)")
BAD_HEARTBEATS = Counter(
    "hermes_router_bad_heartbeats_total", "Heartbeats or probe replies that did not decode", ["reason"]
)
PROBES = Counter("hermes_router_probes_total", "Health probes by outcome", ["backend", "outcome"])

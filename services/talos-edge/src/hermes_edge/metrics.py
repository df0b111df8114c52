"""Prometheus metrics of the edge (served on ``METRICS_PORT``, default 9104)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)

REQUESTS = Counter(
    "hermes_edge_requests_total",
    "Model calls finished by the edge; outcome is 'completed' or the ExecutionFailed error_code",
    ["backend", "model", "outcome"],
)
REQUEST_SECONDS = Histogram(
    "hermes_edge_request_duration_seconds",
    "Model call duration, request sent to last byte (or to the failure)",
    ["backend", "model"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_TOKEN_SECONDS = Histogram(
    "hermes_edge_time_to_first_token_seconds",
    "Request sent to the first streamed text chunk",
    ["backend", "model"],
    buckets=_LATENCY_BUCKETS,
)
TOKENS = Counter(
    "hermes_edge_tokens_total",
    "Model tokens processed; kind is prompt or completion",
    ["backend", "model", "kind"],
)
USAGE_ESTIMATED = Counter(
    "hermes_edge_usage_estimated_total",
    "Completed calls whose token counts were estimated because the provider reported no usage",
    ["backend", "model"],
)
IN_FLIGHT = Gauge("hermes_edge_in_flight", "Model calls running now", ["backend"])
BACKEND_HEALTHY = Gauge("hermes_edge_backend_healthy", "1 when the last health probe succeeded", ["backend"])
PROBE_REQUESTS = Counter(
    "hermes_edge_probe_requests_total",
    "Probe requests (hermes.probe.<backend>) answered with a fresh heartbeat; healthy is true or false",
    ["backend", "healthy"],
)
CANCELLED = Counter(
    "hermes_edge_cancelled_total",
    "Model calls stopped by a cancellation: stage 'running' (the call was cut short) or 'before_start' "
    "(the request arrived after its job was cancelled and was dropped)",
    ["backend", "stage"],
)
REDELIVERED_DONE = Counter(
    "hermes_edge_redelivered_already_done_total",
    "Redelivered requests whose outcome was already in the log (an ack lost to a crash): acked without a call",
    ["backend"],
)

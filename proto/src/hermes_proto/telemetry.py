"""Logging (structlog JSON), Prometheus metrics and OpenTelemetry tracing for every service.

Log lines carry ``service`` plus whatever ids are bound with :func:`bind_ids`
(``thread_id``, ``job_id``, ``correlation_id``) and the current ``trace_id``.
Trace context crosses NATS as W3C ``traceparent`` headers (:func:`inject_headers`,
:func:`extract_context`).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased
from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Log keys that hold secrets: "key", "api_key", "bot_token", "password"... but not "max_tokens" or "first_token_ms".
_SECRET_KEYS = re.compile(r"(?:^|_)(?:key|token|secret|password|authorization|credentials?)$", re.IGNORECASE)

EVENTS_PUBLISHED = Counter("hermes_events_published_total", "Events appended to the log", ["service", "type"])
MESSAGES_CONSUMED = Counter(
    "hermes_messages_consumed_total", "Messages handled by a consumer", ["service", "consumer", "outcome"]
)
REDELIVERIES = Counter("hermes_redeliveries_total", "Messages received more than once", ["service", "consumer"])
CONSUMER_PENDING = Gauge(
    "hermes_consumer_pending_messages",
    "Messages not yet delivered to a durable consumer (its lag), as of its last delivery",
    ["service", "consumer"],
)
DEAD_LETTERS = Counter(
    "hermes_dead_letters_total", "Messages moved to the dead-letter stream", ["service", "consumer", "reason"]
)
HANDLER_SECONDS = Histogram(
    "hermes_handler_duration_seconds",
    "Time to handle one message",
    ["service", "consumer"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def _redact(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in list(event_dict):
        if _SECRET_KEYS.search(key):
            event_dict[key] = "***"
    return event_dict


def _add_trace_id(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict["trace_id"] = format(ctx.trace_id, "032x")
    return event_dict


def configure_logging(service: str, level: str = "INFO", log_file: Path | None = None) -> None:
    """JSON lines on stdout (and appended to ``log_file`` when given), one object per event."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(format="%(message)s", level=level.upper(), handlers=handlers, force=True)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "nats"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_trace_id,
            _redact,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


def bind_ids(**ids: str | None) -> None:
    """Bind thread/job/correlation ids to every log line of the current task."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in ids.items() if v is not None})


def clear_ids(*names: str) -> None:
    structlog.contextvars.unbind_contextvars(*names)


def configure_tracing(service: str) -> None:
    """Install a tracer provider; spans are exported by OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
    Without an exporter nothing would read them, so spans are not recorded (sampler ``ParentBased(ALWAYS_OFF)``):
    trace ids are still made and carried in ``traceparent`` and the logs, at the cost of a non-recording span. Set
    the endpoint on every service or on none: a service with it keeps the unsampled decision of a caller without."""
    exporting = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"hermes-{service}"}),
        sampler=ParentBased(ALWAYS_ON if exporting else ALWAYS_OFF),
    )
    if exporting:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)


def start_metrics_server(port: int) -> None:
    """Serve ``/metrics`` on ``port`` (0 = off) for services without an HTTP app."""
    if port:
        start_http_server(port)


def inject_headers(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context (``traceparent``) to NATS headers; returns ``headers``."""
    inject(headers)
    return headers


def extract_context(headers: dict[str, str] | None) -> otel_context.Context:
    return extract(headers or {})


tracer = trace.get_tracer("hermes")

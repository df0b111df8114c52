"""Per-request observability: request id, one JSON log line and Prometheus series for every HTTP request.

The OpenTelemetry SERVER span is FastAPI's own (its native telemetry continues a caller's ``traceparent``
and stays current while the route runs, so ``EventStore.send`` carries it onto the bus); this middleware
runs inside it and tags it with the request id. A plain ASGI middleware (not ``BaseHTTPMiddleware``) so
streaming responses (SSE) pass through untouched.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import structlog
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hermes_proto.ids import new_id

from hermes_gateway.domain import ID_PATTERN

log = structlog.get_logger("hermes.gateway")

HTTP_REQUESTS = Counter("hermes_gateway_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
HTTP_SECONDS = Histogram(
    "hermes_gateway_http_request_duration_seconds",
    "Time from request to the end of the response (SSE: the whole stream)",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
COMMANDS_PUBLISHED = Counter(
    "hermes_gateway_commands_published_total", "Commands published to HERMES_COMMANDS", ["type"]
)
SSE_CLIENTS = Gauge("hermes_gateway_sse_clients", "Open Server-Sent Events streams")
ACCEPTED_THREADS = Gauge(
    "hermes_gateway_accepted_threads", "Submissions this gateway remembers until the orchestrator shows their thread"
)
ACCEPTED_VIEWS = Counter(
    "hermes_gateway_accepted_views_total",
    "Threads answered as accepted from the gateway's memory; reason not_opened_yet (the "
    "orchestrator does not know the thread yet) or unanswered (the orchestrator did not answer)",
    ["reason"],
)
LIVE_VIEWS = Gauge(
    "hermes_gateway_live_views",
    "Live views of a thread on the gateway's one event feed (SSE streams, chat turns being followed)",
)
FEED_CATCH_UP_READS = Counter(
    "hermes_gateway_feed_catch_up_reads_total",
    "Direct gets of a thread's older events from HERMES_EVENTS, for live views starting before what the feed keeps",
)
FEED_KEPT_THREADS = Gauge("hermes_gateway_feed_kept_threads", "Threads whose recent events the event feed keeps")
SUBMISSIONS_REFUSED = Counter(
    "hermes_gateway_submissions_refused_total", "Submissions refused by admission control", ["reason"]
)
for _reason in ("queue_full", "queue_unknown"):  # exported at 0 from the start, so increase() sees the first refusal
    SUBMISSIONS_REFUSED.labels(_reason)
QUEUE_RESERVED_JOBS = Gauge(
    "hermes_gateway_queue_reserved_jobs",
    "Jobs of submissions this gateway admitted that the orchestrator has not taken yet (counted against the cap)",
)
DEAD_LETTERS_REPLAYED = Counter(
    "hermes_dead_letters_replayed_total",
    "Dead letters an operator replayed (deduplicated repeats not counted)",
    ["consumer"],
)
TELEGRAM_WEBHOOK_OUTCOMES = ("published", "ignored", "unauthorized", "bad_update")
TELEGRAM_WEBHOOK_UPDATES = Counter(
    "hermes_telegram_webhook_updates_total",
    "Telegram webhook requests by outcome: published (stored on HERMES_INBOX, repeats included), ignored (no "
    "chat), unauthorized (wrong or missing secret token), bad_update (not an Update, or over the size cap)",
    ["outcome"],
)
for _outcome in TELEGRAM_WEBHOOK_OUTCOMES:  # exported at 0 from the start, so increase() sees the first one
    TELEGRAM_WEBHOOK_UPDATES.labels(_outcome)

AUTH_FAILURE_REASONS = ("missing", "invalid", "expired_session", "read_only")
AUTH_FAILURES = Counter(
    "hermes_gateway_auth_failures_total",
    "Requests refused by authentication: missing (no credentials), invalid (wrong token or tampered cookie), "
    "expired_session (a session cookie past HERMES_SESSION_TTL_HOURS), read_only (a guest writing)",
    ["reason"],
)
for _reason in AUTH_FAILURE_REASONS:  # exported at 0 from the start, so increase() sees the first one
    AUTH_FAILURES.labels(_reason)
RATE_LIMITED = Counter(
    "hermes_gateway_rate_limited_total",
    "Requests answered 429 rate_limited: token (HERMES_RATE_LIMIT per principal), auth_failure "
    "(HERMES_AUTH_FAILURE_LIMIT per client address)",
    ["scope"],
)
for _scope in ("token", "auth_failure"):
    RATE_LIMITED.labels(_scope)

UNMATCHED_ROUTE = "unmatched"
REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()  # ASGI header names arrive lower-cased


@functools.lru_cache(maxsize=4096)
def _series(route: str, method: str, status: int) -> tuple[Counter, Histogram]:
    """The request counter's and duration histogram's children of one (route, method, status): looked up once."""
    return HTTP_REQUESTS.labels(route, method, str(status)), HTTP_SECONDS.labels(route, method)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (``/api/threads/{thread_id}/status``), never the raw path, so
    label cardinality stays bounded."""
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED_ROUTE


class RequestObservability:
    """ASGI middleware: assigns ``request_id`` (the caller's ``X-Request-ID`` when it is a safe id),
    echoes it in the response, records ``hermes_gateway_http_*`` and logs one ``http_request`` line with
    method, route, path, status, duration_ms, request_id and ``thread_id`` / ``user_id`` when known."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == _REQUEST_ID_KEY), None)
        request_id = supplied if supplied and ID_PATTERN.match(supplied) else new_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state.update(request_id=request_id, started=started)
        status = 500
        method = scope["method"]

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_REQUEST_ID_KEY, request_id.encode())]
            await send(message)

        span = trace.get_current_span()  # FastAPI's SERVER span for this request
        span.set_attribute("hermes.request_id", request_id)
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            status = 500
            span.record_exception(exc)
            raise
        finally:
            route = _route_template(scope)
            elapsed = time.perf_counter() - started
            requests, seconds = _series(route, method, status)
            requests.inc()
            seconds.observe(elapsed)
            path_params = scope.get("path_params") or {}
            known = {
                "thread_id": state.get("thread_id") or path_params.get("thread_id"),
                "job_id": path_params.get("job_id"),
                "error_code": state.get("error_code"),
                "user_id": getattr(state.get("principal"), "user_id", None),
            }
            log.info(
                "http_request",
                method=method,
                route=route,
                path=scope["path"],
                status=status,
                duration_ms=round(elapsed * 1000, 3),
                **{k: v for k, v in known.items() if v},
            )
            structlog.contextvars.unbind_contextvars("request_id")

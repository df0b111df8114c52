"""Observability of a real run: ``hermes up`` with a loopback OpenAI-compatible model server, a loopback
Telegram Bot API and a loopback OTLP/HTTP trace receiver. One idea goes through draft 1, questions, answers
and draft 2; then

- the submit request is ONE trace whose spans come from gateway, orchestrator, backend-router, talos-edge
  and learner (W3C ``traceparent`` carried in NATS headers across every hop);
- every service's ``/metrics`` has its key series with non-zero values, and the backend-router's per-backend
  and budget series agree with the edge's own count of the same calls (calls, tokens, cost = tokens × the
  configured talos prices);
- no log line of any service contains the configured API key or bot token.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from conftest import wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from fakes.otlp import OtlpReceiver
from fakes.telegram_api import FakeTelegramServer
from prometheus_client.parser import text_string_to_metric_families
from promql import exprs_in, promql_metric_names
from stack import HermesUp, sse_events

KEY = "sk-observability-secret-key-0123456789"
TOKEN = "987654:observability-secret-token"
CHAT_ID = "777"
TRACED_SERVICES = {
    "hermes-gateway",
    "hermes-orchestrator",
    "hermes-backend-router",
    "hermes-talos-edge",
    "hermes-learner",
}
# talos is priced for this run (cents per million tokens) so that recorded cost and the budget gauges move;
# the daily budget is far above what one thread can cost, so it never defers a job.
PRICE_IN, PRICE_OUT, DAILY_BUDGET = 300_000, 900_000, 100_000


def run_one_thread(up: HermesUp) -> str:
    """Submit, wait for the questions, answer the first, wait for completion; returns the thread id."""
    with httpx.Client(base_url=up.base_url, timeout=10) as client:
        up.wait_healthy(client)
        submitted = client.post("/api/submit", json={"idea": "help me plan a vegetable garden on my balcony"})
        assert submitted.status_code == 202, submitted.text
        thread_id = submitted.json()["data"]["thread_id"]
        events = sse_events(client, f"/api/threads/{thread_id}/events", {"questions_proposed"}, 60)
        question = next(d for k, d in events if k == "questions_proposed")["questions"][0]
        answered = client.post(
            f"/api/threads/{thread_id}/continue",
            json={"answers": [{"question_id": question["question_id"], "text": "just me"}]},
        )
        assert answered.status_code == 202, answered.text
        events = sse_events(client, f"/api/threads/{thread_id}/events", {"thread_completed"}, 60)
        assert next(d for k, d in events if k == "thread_completed")["reason"] == "answered"
        return thread_id


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def total(text: str, name: str, **labels: str) -> float:
    """Sum of the samples named ``name`` whose labels include ``labels``."""
    return sum(v for n, lab, v in samples(text) if n == name and labels.items() <= lab.items())


def scrape(up: HermesUp) -> dict[str, str]:
    ports = {"gateway": up.web_port, **up.metrics_ports()}
    return {name: httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text for name, port in ports.items()}


ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
ALERTS = ROOT / "deploy" / "compose" / "prometheus" / "alerts.yml"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exported_names(texts: list[str]) -> set[str]:
    """Every series name the scraped services can export, including labeled metrics not observed yet
    (their HELP/TYPE lines are exposed without samples)."""
    names: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
            names |= {s.name for s in family.samples}
    return names


def queried_names() -> dict[str, set[str]]:
    """File name → metric names its PromQL selects (dashboards and alert rules)."""
    files = {p.name: json.loads(p.read_text()) for p in DASHBOARDS}
    files[ALERTS.name] = yaml.safe_load(ALERTS.read_text())
    return {name: {m for e in exprs_in(doc) for m in promql_metric_names(e)} for name, doc in files.items()}


KEY_SERIES = {  # service -> [(metric, labels)] that one answered thread must move above zero
    "gateway": [
        ("hermes_gateway_http_requests_total", {"route": "/api/submit", "status": "202"}),
        ("hermes_gateway_commands_published_total", {"type": "submit_idea"}),
        ("hermes_gateway_http_request_duration_seconds_count", {"route": "/api/submit"}),
    ],
    "orchestrator": [
        ("hermes_events_published_total", {"service": "orchestrator", "type": "thread_opened"}),
        ("hermes_messages_consumed_total", {"service": "orchestrator"}),
        ("hermes_orchestrator_job_duration_seconds_count", {"kind": "draft1", "phase": "end_to_end"}),
        ("hermes_orchestrator_job_duration_seconds_count", {"kind": "draft2", "phase": "queue"}),
        ("hermes_orchestrator_questions_answered_total", {}),
    ],
    "backend-router": [
        ("hermes_router_selections_total", {"backend": "talos"}),
        ("hermes_events_published_total", {"service": "router", "type": "backend_selected"}),
        ("hermes_backend_requests_total", {"backend": "talos", "outcome": "completed"}),
        ("hermes_backend_tokens_total", {"backend": "talos", "kind": "completion"}),
        ("hermes_backend_cost_cents_total", {"backend": "talos"}),
        ("hermes_budget_spent_today_cents", {}),
        ("hermes_router_dispatch_seconds_count", {}),
    ],
    "talos-edge": [
        ("hermes_edge_requests_total", {"backend": "talos", "outcome": "completed"}),
        ("hermes_edge_tokens_total", {"kind": "completion"}),
        ("hermes_edge_time_to_first_token_seconds_count", {"backend": "talos"}),
    ],
    "learner": [("hermes_learner_questions_proposed_total", {}), ("hermes_learner_ideas_classified_total", {})],
    "notifier": [("hermes_notifier_messages_sent_total", {"channel": "telegram"})],
}


def router_mismatches(router: str, edge: str, same_day: bool) -> list[tuple[str, dict[str, str], float, float]]:
    """``(metric, labels, router value, expected)`` for each router series that disagrees with the talos edge's
    count of the same calls; empty when all agree. Every call of this run completes on talos at its first
    attempt, so calls = selections = first dispatches, and cost = (prompt × PRICE_IN + completion × PRICE_OUT)
    / 1e6 cents (``hermes_proto.costs.cost_cents``, rounded per call to 1e-6 cent). ``same_day``: False when
    00:00 UTC fell inside the run (spent today restarts from 0 then, so it is not compared)."""
    calls = total(edge, "hermes_edge_requests_total", backend="talos", outcome="completed")
    prompt = total(edge, "hermes_edge_tokens_total", backend="talos", kind="prompt")
    completion = total(edge, "hermes_edge_tokens_total", backend="talos", kind="completion")
    cost = (prompt * PRICE_IN + completion * PRICE_OUT) / 1e6
    expected = [
        ("hermes_backend_requests_total", {"backend": "talos", "outcome": "completed"}, calls),
        ("hermes_router_selections_total", {"backend": "talos"}, calls),
        ("hermes_router_dispatch_seconds_count", {}, calls),
        ("hermes_backend_latency_seconds_count", {"backend": "talos"}, calls),
        ("hermes_backend_tokens_total", {"backend": "talos", "kind": "prompt"}, prompt),
        ("hermes_backend_tokens_total", {"backend": "talos", "kind": "completion"}, completion),
        ("hermes_backend_cost_cents_total", {"backend": "talos"}, cost),
        ("hermes_budget_daily_cents", {}, DAILY_BUDGET),
        ("hermes_backend_health", {"backend": "talos"}, 1),
        ("hermes_backend_enabled", {"backend": "talos"}, 1),
        ("hermes_backend_in_flight", {"backend": "talos"}, 0),
        ("hermes_router_queued_jobs", {}, 0),
        ("hermes_router_abandoned_total", {}, 0),
        ("hermes_backend_failures_total", {}, 0),
    ]
    if same_day:
        expected.append(("hermes_budget_spent_today_cents", {}, cost))
    tolerance = 1e-6 * (calls + 1)
    return [
        (name, labels, got, want)
        for name, labels, want in expected
        if abs((got := total(router, name, **labels)) - want) > tolerance
    ]


def submit_trace(spans) -> set[str]:
    """Services with spans in the trace of the gateway's ``POST /api/submit`` span (none while that span is still on
    its way: the gateway exports in batches)."""
    roots = [s for s in spans if s.service == "hermes-gateway" and s.name == "POST /api/submit"]
    assert len(roots) <= 1, "\n".join(map(repr, roots))
    return {s.service for s in spans if s.trace_id == roots[0].trace_id} if roots else set()


async def test_one_thread_is_traced_measured_and_logged_without_secrets(tmp_path):
    reply = Reply(chunks=["Start ", "with ", "pots ", "and ", "herbs."])
    async with (
        OtlpReceiver() as otlp,
        FakeTelegramServer(token=TOKEN) as telegram,
        FakeOpenAIServer(reply=reply, models=["fake-model"], api_key=KEY) as model,
    ):
        day = datetime.now(UTC).date()
        up = HermesUp(
            tmp_path,
            HERMES_LOCAL_MODEL="false",
            BACKEND_TALOS_TYPE="openai",
            BACKEND_TALOS_HOST="127.0.0.1",
            BACKEND_TALOS_PORT=str(model.port),
            BACKEND_TALOS_MODELS="fake-model",
            BACKEND_TALOS_KEY=KEY,
            BACKEND_TALOS_PRICE_IN_CENTS_PER_MTOK=str(PRICE_IN),
            BACKEND_TALOS_PRICE_OUT_CENTS_PER_MTOK=str(PRICE_OUT),
            HERMES_DAILY_BUDGET_CENTS=str(DAILY_BUDGET),
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_CHAT_ID=CHAT_ID,
            TELEGRAM_API_BASE_URL=telegram.api_base_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="200",
        ).start()
        try:
            # Blocking HTTP runs in a thread: the loopback servers live on this event loop.
            await asyncio.to_thread(run_one_thread, up)
            await wait_until(lambda: telegram.messages_to(CHAT_ID), timeout_s=30)

            await wait_until(lambda: TRACED_SERVICES <= submit_trace(otlp.spans), timeout_s=20)
            server_spans = [s for s in otlp.spans if s.service == "hermes-gateway" and s.name == "POST /api/submit"]
            assert server_spans[0].parent_span_id == ""  # the trace starts at the HTTP request

            async def router_agrees() -> bool:
                # The router counts a call when it consumes ExecutionCompleted, and records its cost (and
                # refreshes spent today) in the dispatch rounds after that: it may trail the edge briefly.
                texts = await asyncio.to_thread(scrape, up)
                return not router_mismatches(texts["backend-router"], texts["talos-edge"], True)

            try:
                await wait_until(router_agrees, timeout_s=30, interval_s=0.5)
            except TimeoutError:
                pass  # the assertion below names the series that disagree

            metrics = await asyncio.to_thread(scrape, up)
            assert set(KEY_SERIES) <= set(metrics)
            calls = total(metrics["talos-edge"], "hermes_edge_requests_total", backend="talos", outcome="completed")
            assert calls >= 2  # draft 1 and draft 2 at least
            assert total(metrics["talos-edge"], "hermes_edge_tokens_total", kind="prompt") > 0
            same_day = datetime.now(UTC).date() == day
            mismatches = router_mismatches(metrics["backend-router"], metrics["talos-edge"], same_day)
            assert not mismatches, mismatches
            missing = [
                (svc, name, labels)
                for svc, series in KEY_SERIES.items()
                for name, labels in series
                if total(metrics[svc], name, **labels) <= 0
            ]
            assert not missing, missing
            assert any(n == "hermes_consumer_pending_messages" for n, _, _ in samples(metrics["orchestrator"]))

            def queue_depth() -> list[tuple[str, float]]:
                return [
                    (labels["priority"], value)
                    for n, labels, value in samples(scrape(up)["orchestrator"])
                    if n == "hermes_queue_depth"
                ]

            # Every priority is exported, from the read model (refreshed every 2 s); the thread is done, so no
            # job is left open.
            depth = await wait_until(
                lambda: asyncio.to_thread(lambda: (d := queue_depth()) and sum(v for _, v in d) == 0 and d),
                timeout_s=10,
            )
            assert sorted(int(p) for p, _ in depth) == list(range(1, 11))

            # Every metric a dashboard or alert rule queries is one the services really export.
            exported = exported_names(list(metrics.values())) | {"up"}
            queried = queried_names()
            assert len(queried) == len(DASHBOARDS) + 1 and all(queried.values()), queried
            unknown = {name: sorted(names - exported) for name, names in queried.items() if names - exported}
            assert not unknown, unknown
        finally:
            await asyncio.to_thread(up.stop)
    logs = up.all_logs()
    assert "draft_presented" in logs or "questions_proposed" in logs  # the logs are really there
    assert KEY not in logs and TOKEN not in logs

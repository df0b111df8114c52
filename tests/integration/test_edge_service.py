"""The edge as a real process over a real JetStream server, calling a loopback fake model server.

The test plays the router: it publishes ``ExecutionRequested`` on ``hermes.exec.talos`` (with
``Nats-Msg-Id`` and a ``traceparent``) and reads what the edge put in ``HERMES_EVENTS``, on the token
subject, on the heartbeat subject and in ``HERMES_DLQ``, and asks for fresh heartbeats on the probe subject.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import stored_dead_letters, thread_events, wait_until
from fakes.llm_servers import FakeAnthropicServer, FakeLLMServer, FakeOllamaServer, FakeOpenAIServer, Fault, Reply
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.codec import decode_heartbeat, encode
from hermes_proto.deadletter import DeadLetter
from hermes_proto.events import ExecutionCompleted, ExecutionFailed, ExecutionStarted
from hermes_proto.execution import ExecutionRequested, Heartbeat, TokenDelta
from hermes_proto.ids import derived_id, new_id, utcnow

from hermes_cli.natsserver import free_port

KEY = "sk-edge-test-9f8e7d"
TEXT = "Start with herbs: basil, chives and mint need little space and forgive mistakes."
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@dataclass
class Edge:
    """A running edge process and what the test observes on the bus."""

    proc: ServiceProcess
    server: FakeLLMServer
    nc: object
    js: object
    metrics_port: int
    heartbeats: list[dict] = field(default_factory=list)

    async def request(self, *, model: str = "model-b", max_tokens: int = 64) -> ExecutionRequested:
        """Publish a new ExecutionRequested as the router would; returns it."""
        request = new_request(model=model, max_tokens=max_tokens)
        await self.publish(request)
        return request

    async def publish(self, request: ExecutionRequested, msg_id: str | None = None) -> None:
        await self.js.publish(
            subjects.exec_subject("talos"),
            encode(request),
            headers={"Nats-Msg-Id": msg_id or request.request_id, "traceparent": TRACEPARENT},
        )

    async def metrics(self) -> str:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5)).text


def new_request(*, model: str = "model-b", max_tokens: int = 64) -> ExecutionRequested:
    return ExecutionRequested(
        request_id=new_id(),
        thread_id=new_id(),
        job_id=new_id(),
        backend="talos",
        model=model,
        messages=[ChatMessage(role="user", content="Plan a balcony garden.")],
        max_tokens=max_tokens,
        temperature=0.2,
        timeout_s=20.0,
        correlation_id=new_id(),
        requested_at=utcnow(),
    )


async def outcome_of(js, request: ExecutionRequested, timeout_s: float = 15.0) -> list:
    """Wait until the request's thread has a terminal event; returns the thread's events."""

    async def finished():
        events = await thread_events(js, request.thread_id)
        return events if any(isinstance(e, ExecutionCompleted | ExecutionFailed) for e in events) else None

    return await wait_until(finished, timeout_s=timeout_s, interval_s=0.1)


async def collect_tokens(nc, request: ExecutionRequested) -> list[TokenDelta]:
    """Subscribe to the request's token subject (before publishing it); the list fills as deltas arrive."""
    deltas: list[TokenDelta] = []

    async def on_delta(msg) -> None:
        deltas.append(msgspec.json.decode(msg.data, type=TokenDelta))

    await nc.subscribe(subjects.token_subject(request.thread_id, request.job_id), cb=on_delta)
    await nc.flush()
    return deltas


def metric_value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.fixture
async def start_edge(js_client, bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Callable]:
    """``await start_edge(server, **env)`` runs ``python -m hermes_edge`` against ``server``."""
    nc, js = js_client
    started: list[tuple[ServiceProcess, FakeLLMServer]] = []

    async def start(server: FakeLLMServer, kind: str = "openai", port: int | None = None, **extra: str) -> Edge:
        metrics_port = free_port()
        env = dict(bus_env)
        env.update(
            {
                "HERMES_EDGE_BACKEND": "talos",
                "BACKEND_TALOS_TYPE": kind,
                "BACKEND_TALOS_HOST": "127.0.0.1",
                "BACKEND_TALOS_PORT": str(port or server.port),
                "BACKEND_TALOS_MODELS": "model-a,model-b",
                "BACKEND_TALOS_TIMEOUT": "30",
                "BACKEND_TALOS_KEY": KEY,
                "METRICS_PORT": str(metrics_port),
                "HERMES_EDGE_HEARTBEAT_S": "0.5",
            }
        )
        env.update(extra)
        heartbeats: list[dict] = []

        async def on_heartbeat(msg) -> None:
            heartbeats.append(json.loads(msg.data))

        # Subscribed before the edge starts: with a long heartbeat period the first beat is the only one.
        await nc.subscribe("hermes.heartbeat.talos", cb=on_heartbeat)
        await nc.flush()
        proc = ServiceProcess(f"edge-{len(started)}", "hermes_edge", env, tmp_path / "logs").start()
        started.append((proc, server))
        edge = Edge(proc, server, nc, js, metrics_port, heartbeats)
        await wait_until(lambda: edge.heartbeats or not proc.alive(), timeout_s=20)
        assert proc.alive(), proc.log_text()
        return edge

    yield start
    for proc, server in started:
        await asyncio.to_thread(proc.stop)  # not blocking the loop: the fake server keeps answering
        await server.stop()


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAIServer]:
    server = FakeOpenAIServer(
        reply=Reply(text=TEXT, prompt_tokens=23, completion_tokens=15), models=["model-a", "model-b"], api_key=KEY
    )
    yield await server.start()
    await server.stop()


@pytest.mark.parametrize("kind", ["openai", "ollama"])
async def test_request_is_executed_streamed_and_recorded(start_edge, kind: str) -> None:
    server_cls = FakeOpenAIServer if kind == "openai" else FakeOllamaServer
    server = await server_cls(
        reply=Reply(text=TEXT, prompt_tokens=23, completion_tokens=15), models=["model-a", "model-b"], api_key=KEY
    ).start()
    edge = await start_edge(server, kind=kind)
    request = new_request()
    deltas = await collect_tokens(edge.nc, request)  # subscribe first: thread and job ids are ours to choose
    await edge.publish(request)

    events = await outcome_of(edge.js, request)
    started, completed = events
    assert isinstance(started, ExecutionStarted) and isinstance(completed, ExecutionCompleted)
    for event in events:
        assert event.aggregate_id == request.thread_id
        assert event.correlation_id == request.correlation_id
        assert event.causation_id == request.request_id
        assert (event.job_id, event.backend, event.model) == (request.job_id, "talos", "model-b")
    assert started.event_id == derived_id(request.request_id, "execution_started")
    assert started.attempt == 1
    assert completed.text == TEXT
    assert (completed.prompt_tokens, completed.completion_tokens) == (23, 15)  # the provider's usage
    assert completed.finish_reason == "stop"
    assert completed.first_token_ms is not None and 0 < completed.first_token_ms <= completed.latency_ms

    await wait_until(lambda: deltas and deltas[-1].done, timeout_s=5)
    assert [d.seq for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == TEXT
    assert [d.done for d in deltas] == [False] * (len(deltas) - 1) + [True]
    assert len(deltas) == len(Reply(text=TEXT).split()) + 1
    assert {d.job_id for d in deltas} == {request.job_id}

    [sent] = server.chat_requests()
    assert sent.body["model"] == "model-b" and sent.body["stream"] is True
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.headers["traceparent"].split("-")[1] == TRACE_ID  # the CLIENT span continues the trace

    text = await edge.metrics()
    labels = {"backend": "talos", "model": "model-b"}
    assert metric_value(text, "hermes_edge_requests_total", outcome="completed", **labels) == 1
    assert metric_value(text, "hermes_edge_tokens_total", kind="prompt", **labels) == 23
    assert metric_value(text, "hermes_edge_tokens_total", kind="completion", **labels) == 15
    assert metric_value(text, "hermes_edge_request_duration_seconds_count", **labels) == 1
    assert metric_value(text, "hermes_edge_time_to_first_token_seconds_count", **labels) == 1
    assert metric_value(text, "hermes_edge_in_flight", backend="talos") == 0

    info = await edge.js.stream_info(subjects.EXEC_STREAM)
    assert info.state.messages == 0  # acked: the work queue is empty

    assert await asyncio.to_thread(edge.proc.stop, signal.SIGTERM) == 0
    log = edge.proc.log_text()
    assert "edge_stopped" in log
    assert KEY not in log


async def test_provider_failures_become_execution_failed(start_edge, fake_openai: FakeOpenAIServer) -> None:
    edge = await start_edge(fake_openai)
    cases = [
        (Fault.RATE_LIMITED, {"retry_after": "7"}, "rate_limited", True),
        (Fault.UNAUTHORIZED, {}, "auth_failed", False),
        (Fault.STREAM_CUT, {"cut_after": 3}, "stream_cut", True),
        (Fault.BAD_REQUEST, {"message": "context length exceeded"}, "bad_request", False),
    ]
    for fault, options, code, retryable in cases:
        fake_openai.set_fault(fault, times=1, **options)
        before = len(fake_openai.chat_requests())
        request = new_request(model="model-a")
        deltas = await collect_tokens(edge.nc, request)
        await edge.publish(request)

        started, failed = await outcome_of(edge.js, request)
        assert isinstance(started, ExecutionStarted)
        assert isinstance(failed, ExecutionFailed), failed
        assert (failed.error_code, failed.retryable) == (code, retryable), failed.message
        assert failed.causation_id == request.request_id and failed.job_id == request.job_id
        assert failed.latency_ms > 0
        # The router cools the backend down for the provider's Retry-After; no other failure carries one.
        assert failed.retry_after_s == (7.0 if fault == Fault.RATE_LIMITED else None)
        if fault == Fault.RATE_LIMITED:
            assert "7 s" in failed.message
        if fault == Fault.BAD_REQUEST:
            assert "context length exceeded" in failed.message
        # The live view is told the job is over, after whatever arrived before the failure.
        await wait_until(lambda d=deltas: d and d[-1].done, timeout_s=5)
        if fault == Fault.STREAM_CUT:
            assert "".join(d.text for d in deltas) == "".join(Reply(text=TEXT).split()[:3])
        # The edge never retries by itself.
        assert len(fake_openai.chat_requests()) == before + 1

    text = await edge.metrics()
    for _, _, code, _ in cases:
        assert metric_value(text, "hermes_edge_requests_total", backend="talos", model="model-a", outcome=code) == 1


async def test_undecodable_requests_are_dead_lettered_and_the_edge_keeps_working(
    start_edge, fake_openai: FakeOpenAIServer
) -> None:
    edge = await start_edge(fake_openai)
    await edge.js.publish(subjects.exec_subject("talos"), b"{not json", headers={"Nats-Msg-Id": "bad-1"})
    await edge.js.publish(
        subjects.exec_subject("talos"),
        b'{"type": "execution_requested", "prompt": "hi"}',
        headers={"Nats-Msg-Id": "bad-2"},
    )

    async def dead_letters() -> list[DeadLetter] | None:
        info = await edge.js.stream_info(subjects.DLQ_STREAM)
        if info.state.messages < 2:
            return None
        return [
            msgspec.json.decode((await edge.js.get_msg(subjects.DLQ_STREAM, seq)).data, type=DeadLetter)
            for seq in (1, 2)
        ]

    records = await wait_until(dead_letters, timeout_s=15)
    assert [r.reason for r in records] == ["invalid_json", "validation_failed"]
    assert {r.consumer for r in records} == {"edge-talos"}
    assert records[0].payload == "{not json" and records[0].subject == "hermes.exec.talos"
    assert fake_openai.chat_requests() == []

    request = await edge.request()
    _, completed = await outcome_of(edge.js, request)
    assert isinstance(completed, ExecutionCompleted) and completed.text == TEXT
    assert edge.proc.alive()


async def test_a_redelivered_request_does_not_duplicate_events(start_edge, fake_openai: FakeOpenAIServer) -> None:
    """The same request arriving twice (e.g. the router republished it) runs twice but is recorded once."""
    edge = await start_edge(fake_openai)
    request = await edge.request()
    await outcome_of(edge.js, request)
    await edge.publish(request, msg_id="republished")  # a new message, the same request
    await wait_until(lambda: len(fake_openai.chat_requests()) == 2, timeout_s=15)
    await wait_until(lambda: metric_value_sync(edge, "completed") == 2, timeout_s=5)

    events = await thread_events(edge.js, request.thread_id)
    assert [e.type_name() for e in events] == ["execution_started", "execution_completed"]


def metric_value_sync(edge: Edge, outcome: str) -> float | None:
    text = httpx.get(f"http://127.0.0.1:{edge.metrics_port}/metrics", timeout=5).text
    return metric_value(text, "hermes_edge_requests_total", backend="talos", model="model-b", outcome=outcome)


async def test_heartbeats_report_health_even_when_the_model_server_starts_later(start_edge) -> None:
    port = free_port()
    server = FakeOllamaServer(
        reply=Reply(chunks=["slow"] * 12, chunk_delay_s=0.25), models=["model-a", "model-b"], port=port
    )
    edge = await start_edge(server, kind="ollama", port=port)

    # Nothing listens yet: the edge stays up and says so.
    await wait_until(lambda: len(edge.heartbeats) >= 3, timeout_s=10)
    assert edge.proc.alive()
    first = edge.heartbeats[0]
    assert first["backend"] == "talos" and first["healthy"] is False
    assert first["models"] == ["model-a", "model-b"] and first["in_flight"] == 0
    datetime.fromisoformat(first["sent_at"])

    await server.start()
    await wait_until(lambda: edge.heartbeats[-1]["healthy"] is True, timeout_s=10)
    assert server.requests and server.requests[0].path == "/api/tags"

    # A call of ~3 s is visible as in-flight work.
    request = await edge.request()
    await wait_until(lambda: edge.heartbeats[-1]["in_flight"] == 1, timeout_s=10)
    _, completed = await outcome_of(edge.js, request)
    assert isinstance(completed, ExecutionCompleted) and completed.text == "slow" * 12
    await wait_until(lambda: edge.heartbeats[-1]["in_flight"] == 0, timeout_s=5)

    server.healthy = False
    await wait_until(lambda: edge.heartbeats[-1]["healthy"] is False, timeout_s=5)


async def test_a_busy_one_at_a_time_server_stays_healthy_during_a_long_call(
    start_edge, fake_openai: FakeOpenAIServer
) -> None:
    """Like llama.cpp's server, the fake answers the model list only after the running generation, which
    lasts longer than the probe timeout (0.5 s here); the backend must not be reported down meanwhile."""
    fake_openai.serial = True
    fake_openai.reply = Reply(chunks=["busy "] * 10, chunk_delay_s=0.3)
    edge = await start_edge(fake_openai, HERMES_EDGE_PROBE_TIMEOUT_S="0.5")
    await wait_until(lambda: edge.heartbeats[-1]["healthy"] is True, timeout_s=10)
    request = await edge.request()
    await wait_until(lambda: edge.heartbeats[-1]["in_flight"] == 1, timeout_s=10)
    during = len(edge.heartbeats)
    # The router's probe is answered without probing too: behind the generation a real probe would time out
    # (0.5 s) and answer unhealthy.
    busy_probe = await probe(edge, timeout_s=1.0)
    _, completed = await outcome_of(edge.js, request)
    assert isinstance(completed, ExecutionCompleted) and completed.text == "busy " * 10
    busy_beats = [b for b in edge.heartbeats[during - 1 :] if b["in_flight"] == 1]
    assert len(busy_beats) >= 3
    assert all(b["healthy"] for b in busy_beats), busy_beats
    assert busy_probe.healthy is True and busy_probe.in_flight == 1


async def probe(edge: Edge, timeout_s: float = 5.0) -> Heartbeat:
    """Ask the backend's edges for a fresh heartbeat, as the router does."""
    reply = await edge.nc.request(subjects.probe_subject("talos"), b"", timeout=timeout_s)
    return decode_heartbeat(reply.data)


async def test_probe_requests_get_a_fresh_heartbeat(start_edge) -> None:
    """Heartbeats every 60 s here: only a probe made for the request can see the server go away and come
    back. No models are configured, so the reply lists the server's; the backend is Anthropic's API."""
    server = await FakeAnthropicServer(
        reply=Reply(text=TEXT, prompt_tokens=12, completion_tokens=9),
        models=["claude-small", "claude-big"],
        api_key=KEY,
    ).start()
    edge = await start_edge(server, kind="anthropic", BACKEND_TALOS_MODELS="", HERMES_EDGE_HEARTBEAT_S="60")
    listings = len(server.requests)

    healthy = await probe(edge)
    assert (healthy.backend, healthy.healthy, healthy.in_flight) == ("talos", True, 0)
    assert healthy.models == ["claude-small", "claude-big"]
    assert healthy.edge_id == edge.heartbeats[0]["edge_id"] != ""
    assert len(server.requests) == listings + 1 and server.requests[-1].path == "/v1/models"
    assert server.requests[-1].headers["x-api-key"] == KEY

    request = await edge.request(model="claude-big")
    _, completed = await outcome_of(edge.js, request)
    assert isinstance(completed, ExecutionCompleted), completed
    assert (completed.text, completed.prompt_tokens, completed.completion_tokens) == (TEXT, 12, 9)

    await server.stop()
    down = await probe(edge)
    assert (down.healthy, down.models) == (False, [])

    await server.start()  # the same port
    assert (await probe(edge)).healthy is True
    assert len(edge.heartbeats) == 1  # every answer above came from a probe, not from a periodic beat
    text = await edge.metrics()
    assert metric_value(text, "hermes_edge_probe_requests_total", backend="talos", healthy="true") == 2
    assert metric_value(text, "hermes_edge_probe_requests_total", backend="talos", healthy="false") == 1


async def test_a_long_call_is_kept_in_progress_instead_of_redelivered(
    start_edge, fake_openai: FakeOpenAIServer
) -> None:
    """Ack wait 1.5 s, a 4 s call, and a second idle consumer that would pick up any redelivery."""
    fake_openai.reply = Reply(chunks=["tick "] * 10, chunk_delay_s=0.4)
    edge = await start_edge(fake_openai, HERMES_EDGE_ACK_WAIT_S="1.5", HERMES_EDGE_CONCURRENCY="2")
    request = await edge.request()

    _, completed = await outcome_of(edge.js, request, timeout_s=20)
    assert isinstance(completed, ExecutionCompleted) and completed.latency_ms > 3000
    await asyncio.sleep(2.0)  # time for a (wrong) redelivery to be picked up
    assert len(fake_openai.chat_requests()) == 1
    info = await edge.js.consumer_info(subjects.EXEC_STREAM, "edge-talos")
    assert info.num_redelivered == 0 and info.num_ack_pending == 0
    assert info.config.ack_wait == 1.5


async def test_sigterm_lets_the_running_call_finish(start_edge, fake_openai: FakeOpenAIServer) -> None:
    fake_openai.reply = Reply(chunks=["one ", "two ", "three ", "four ", "five"], chunk_delay_s=0.4)
    edge = await start_edge(fake_openai)
    request = new_request()
    deltas = await collect_tokens(edge.nc, request)
    await edge.publish(request)
    await wait_until(lambda: deltas, timeout_s=10)

    assert await asyncio.to_thread(edge.proc.stop, signal.SIGTERM) == 0
    _, completed = await outcome_of(edge.js, request, timeout_s=2)
    assert isinstance(completed, ExecutionCompleted) and completed.text == "one two three four five"
    info = await edge.js.stream_info(subjects.EXEC_STREAM)
    assert info.state.messages == 0


async def test_a_request_delivered_too_often_is_recorded_as_failed_not_left_hanging(
    start_edge, fake_openai: FakeOpenAIServer
) -> None:
    """Edges that died during a call five times (here: a stand-in that takes the request and hands it back)
    leave a request at its last delivery: the edge dead-letters it AND appends ``ExecutionFailed`` so the router
    retries or abandons the job instead of waiting for an outcome that never comes."""
    edge = await start_edge(fake_openai)
    await asyncio.to_thread(edge.proc.stop)
    request = new_request()
    await edge.publish(request)
    crashed = await edge.js.pull_subscribe_bind(durable="edge-talos", stream=subjects.EXEC_STREAM)
    for _ in range(5):
        [msg] = await crashed.fetch(1, timeout=10)
        await msg.nak()
    await crashed.unsubscribe()
    edge.proc.start()

    events = await outcome_of(edge.js, request)
    assert [e.type_name() for e in events] == ["execution_failed"]
    assert events[0].error_code == "max_deliveries" and events[0].retryable
    assert "dead-lettered (max_deliveries: delivered 6 times)" in events[0].message
    letters = await wait_until(lambda: stored_dead_letters(edge.js), timeout_s=10)
    assert [(r.reason, r.deliveries) for r in letters] == [("max_deliveries", 6)]
    assert fake_openai.chat_requests() == []  # the model was never called for it


async def test_a_redelivery_whose_outcome_is_already_logged_does_not_call_the_model_again(
    start_edge, fake_openai: FakeOpenAIServer
) -> None:
    """An edge (or NATS) killed after the outcome was appended but before the ack: the request comes back. The
    log already holds its outcome, so the edge acks it without calling (and billing) the model again."""
    edge = await start_edge(fake_openai)
    request = await edge.request()
    first = await outcome_of(edge.js, request)
    assert len(fake_openai.chat_requests()) == 1
    await asyncio.to_thread(edge.proc.stop)
    await edge.publish(request, msg_id="lost-ack")  # the same request, as a redelivery would bring it back
    crashed = await edge.js.pull_subscribe_bind(durable="edge-talos", stream=subjects.EXEC_STREAM)
    [msg] = await crashed.fetch(1, timeout=10)
    await msg.nak()  # its first delivery died with an edge
    await crashed.unsubscribe()
    edge.proc.start()
    await wait_until(lambda: "execution_already_recorded" in edge.proc.log_text(), timeout_s=20)
    assert len(fake_openai.chat_requests()) == 1
    assert [e.event_id for e in await thread_events(edge.js, request.thread_id)] == [e.event_id for e in first]
    info = await edge.js.consumer_info(subjects.EXEC_STREAM, "edge-talos")
    assert info.num_pending == 0 and info.num_ack_pending == 0

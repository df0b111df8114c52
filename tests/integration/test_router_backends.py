"""Backends behind the router, end to end on real parts: a real nats-server, the real backend-router and one
real talos-edge process per backend, each edge in front of a loopback model server that speaks the provider's
wire format over HTTP with injectable faults. The test plays the orchestrator: it appends ``JobQueued`` and
reads the thread's events.

Proves: failover to the next backend on each retryable fault; no failover on 401; a daily budget that keeps a
job off a paid backend; a backend no live edge serves is not eligible; a private job that never leaves the local backend; an unhealthy backend skipped, then
recovered; exact cost recorded from the provider's usage; a new backend added by configuration only; and that a
rebuilt read model gives the same scores and spend.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from conftest import stored_events, thread_events, wait_until
from fakes.edge_beats import EdgeBeats
from fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer, Fault, Reply
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.bus import EventStore
from hermes_proto.events import JobQueued
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import BackendsReply, SetBackendEnabled

REMOTE_KEY = "sk-remote-test-key"
REMOTE_PRICE = 300.0  # cents per million tokens, input and output
USAGE = (23, 15)  # prompt, completion tokens the fakes report


@dataclass
class Cluster:
    nc: object
    js: object
    env: dict[str, str]
    logs: Path
    servers: dict[str, FakeOpenAIServer]
    edges: dict[str, ServiceProcess] = field(default_factory=dict)
    router: ServiceProcess | None = None

    def router_env(self, **extra: str) -> dict[str, str]:
        env = dict(self.env)
        env.update(extra)
        return env

    async def start_router(self, **extra: str) -> ServiceProcess:
        router = ServiceProcess("router", "hermes_router", self.router_env(**extra), self.logs)
        offset = len(router.log_text())  # a restarted router appends to the same log
        self.router = router.start()
        await wait_until(lambda: "router_started" in router.log_text()[offset:] or not router.alive(), timeout_s=30)
        assert self.router.alive(), self.router.log_text()
        return self.router

    def start_edge(self, name: str, **extra: str) -> ServiceProcess:
        env = dict(self.env, HERMES_EDGE_BACKEND=name, METRICS_PORT="0", HERMES_EDGE_HEARTBEAT_S="0.5")
        env.update(extra)
        self.edges[name] = ServiceProcess(f"edge-{name}", "hermes_edge", env, self.logs).start()
        return self.edges[name]

    async def job(self, content: str = "hello there", **fields) -> JobQueued:
        job = JobQueued(
            event_id=new_id(),
            aggregate_id=new_id(),
            occurred_at=utcnow(),
            correlation_id=new_id(),
            job_id=new_id(),
            kind="draft2",
            messages=[ChatMessage(role="user", content=content)],
            max_tokens=64,
            **fields,
        )
        await EventStore(self.js, "test").append([job])
        return job

    async def outcome(self, job: JobQueued, timeout_s: float = 30) -> list:
        """The job's events once it completed or was abandoned (and its cost, if any, was recorded)."""

        async def done():
            events = await thread_events(self.js, job.aggregate_id)
            types = [e.type_name() for e in events]
            if "execution_abandoned" in types or "cost_recorded" in types:
                return events
            return None

        return await wait_until(done, timeout_s=timeout_s, interval_s=0.2)

    async def backends(self) -> BackendsReply:
        reply = await self.nc.request(subjects.QUERY_BACKENDS, b"{}", timeout=10)
        return msgspec.json.decode(reply.data, type=BackendsReply)

    async def set_enabled(self, name: str, enabled: bool) -> None:
        await self.nc.request(
            subjects.CONTROL_BACKEND, msgspec.json.encode(SetBackendEnabled(backend=name, enabled=enabled)), timeout=10
        )

    async def wait_health(self, name: str, state: str, timeout_s: float = 20) -> None:
        async def reached():
            return next(b for b in (await self.backends()).backends if b.name == name).health == state

        await wait_until(reached, timeout_s=timeout_s, interval_s=0.2)


def of(events: list, type_name: str) -> list:
    return [e for e in events if e.type_name() == type_name]


@pytest.fixture
async def cluster(js_client, bus_env, tmp_path) -> AsyncIterator[Cluster]:
    """talos (local, free, primary) and remote (paid, keyed), each a fake OpenAI-compatible server with its
    own edge; the router is started by the test with its own policy."""
    nc, js = js_client
    talos = await FakeOpenAIServer(
        reply=Reply(text="talos says hi", prompt_tokens=USAGE[0], completion_tokens=USAGE[1]), models=["small"]
    ).start()
    remote = await FakeOpenAIServer(
        reply=Reply(text="remote says hi", prompt_tokens=USAGE[0], completion_tokens=USAGE[1]),
        models=["big"],
        api_key=REMOTE_KEY,
    ).start()
    env = dict(
        bus_env,
        METRICS_PORT="0",
        HERMES_BACKENDS_ENABLED="talos,remote",
        HERMES_PRIMARY_BACKEND="talos",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(talos.port),
        BACKEND_TALOS_MODELS="small",
        BACKEND_TALOS_TIMEOUT="2",
        BACKEND_TALOS_QUALITY="1.0",
        BACKEND_TALOS_SPEED="1.0",
        BACKEND_REMOTE_QUALITY="0.2",
        BACKEND_REMOTE_SPEED="0.2",
        BACKEND_REMOTE_TYPE="openai",
        BACKEND_REMOTE_HOST="127.0.0.1",
        BACKEND_REMOTE_PORT=str(remote.port),
        BACKEND_REMOTE_MODELS="big",
        BACKEND_REMOTE_KEY=REMOTE_KEY,
        BACKEND_REMOTE_TIMEOUT="10",
        BACKEND_REMOTE_COST_PER_MTOK_CENTS=str(REMOTE_PRICE),
        BACKEND_TALOS_HEALTH_CHECK_INTERVAL="1",
        BACKEND_REMOTE_HEALTH_CHECK_INTERVAL="1",
        HERMES_FAILOVER_DELAY_SECONDS="0.2",
        HERMES_UNHEALTHY_THRESHOLD="2",
    )
    c = Cluster(nc, js, env, tmp_path / "logs", {"talos": talos, "remote": remote})
    c.start_edge("talos")
    c.start_edge("remote")
    yield c
    procs = list(c.edges.values()) + ([c.router] if c.router else [])
    await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs))
    await talos.stop()
    await remote.stop()


RETRYABLE_FAULTS = [
    (Fault.SERVER_ERROR, "http_5xx", {}),
    (Fault.SLOW_FIRST_BYTE, "timeout", {"delay_s": 4.0}),
    (Fault.MALFORMED_JSON, "malformed_response", {}),
    (Fault.STREAM_CUT, "stream_cut", {}),
    (Fault.RATE_LIMITED, "rate_limited", {"retry_after": "1"}),
]


async def test_each_retryable_fault_fails_over_to_the_next_backend(cluster: Cluster) -> None:
    await cluster.start_router()
    await cluster.wait_health("talos", "healthy")
    for fault, code, params in RETRYABLE_FAULTS:
        cluster.servers["talos"].set_fault(fault, times=1, **params)
        events = await cluster.outcome(await cluster.job())
        selected = of(events, "backend_selected")
        assert [(s.backend, s.attempt) for s in selected] == [("talos", 1), ("remote", 2)], (fault, selected)
        assert selected[1].failover_from == "talos"
        [failed] = of(events, "execution_failed")
        assert failed.error_code == code and failed.retryable and failed.backend == "talos", (fault, failed)
        [done] = of(events, "execution_completed")
        assert done.backend == "remote" and done.text == "remote says hi"
        if fault is Fault.RATE_LIMITED:
            assert failed.retry_after_s == 1.0
        # The first choice was talos by score; remote's candidate row says why it lost.
        rejected = {c.backend: c.rejected for c in selected[0].candidates}
        assert rejected["talos"] is None and rejected["remote"].startswith("lower score than talos")
        await asyncio.sleep(1.1)  # let a 429's cool-down pass before the next fault
    assert cluster.router.alive()


async def test_401_is_not_failed_over_and_says_why(cluster: Cluster) -> None:
    # The remote edge holds a wrong key: the provider answers 401, which retrying cannot fix.
    cluster.edges["remote"].stop()
    cluster.start_edge("remote", BACKEND_REMOTE_KEY="sk-wrong")
    # Its probes (GET /v1/models with the wrong key) are 401 too, so after the threshold's heartbeats the router
    # marks it unhealthy and a job pinned to it waits instead of being called: keep the mark away so this test
    # sees the call's own 401 whatever the machine's load (a loaded CI run took >1 s to the first selection).
    await cluster.start_router(HERMES_UNHEALTHY_THRESHOLD="1000")
    events = await cluster.outcome(await cluster.job(backend="remote"))
    assert [s.backend for s in of(events, "backend_selected")] == ["remote"]
    [abandoned] = of(events, "execution_abandoned")
    assert abandoned.error_code == "auth_failed" and abandoned.attempts == 1
    assert "401" in abandoned.message or "key" in abandoned.message.lower(), abandoned.message
    assert not of(events, "execution_completed")


async def test_paid_backend_cost_is_recorded_exactly_and_a_budget_keeps_jobs_off_it(cluster: Cluster) -> None:
    # Daily budget 0.03 c: the first remote call's estimate (11 prompt tokens estimated + 64 max output, at
    # 300 c/Mtok = 0.0225 c) fits; after it cost 0.0114 c, the second estimate (0.0222 c) no longer does.
    await cluster.start_router(HERMES_DAILY_BUDGET_CENTS="0.03", HERMES_BUDGET_ALERT_THRESHOLD="0.3")
    await cluster.set_enabled("talos", False)
    first = await cluster.outcome(await cluster.job(content="pay for this one"))
    [cost] = of(first, "cost_recorded")
    prompt, completion = USAGE
    assert cost.backend == "remote" and (cost.prompt_tokens, cost.completion_tokens) == USAGE
    assert cost.cost_cents == pytest.approx((prompt * REMOTE_PRICE + completion * REMOTE_PRICE) / 1_000_000)

    second = await cluster.job(content="and this one")

    async def deferred():
        events = await thread_events(cluster.js, second.aggregate_id)
        return of(events, "job_deferred")

    [wait] = await wait_until(deferred, timeout_s=15)
    assert wait.reason == "over_budget", wait
    await asyncio.sleep(1.5)
    assert not of(await thread_events(cluster.js, second.aggregate_id), "backend_selected")
    assert len(cluster.servers["remote"].chat_requests()) == 1  # the paid provider saw one call only

    # The free local backend comes back: the waiting job runs there, never on the paid one.
    await cluster.set_enabled("talos", True)
    events = await cluster.outcome(second)
    assert [s.backend for s in of(events, "backend_selected")] == ["talos"]
    assert of(events, "cost_recorded")[0].cost_cents == 0.0
    view = await cluster.backends()
    assert view.budget.spent_today_cents == pytest.approx(cost.cost_cents)
    # 0.3 × 0.03 c = 0.009 c reached by the first call: one alert event for today's daily budget.
    alerts = await stored_events(cluster.js, "hermes.evt.budget.>")
    assert [(a.scope, a.budget_cents) for a in alerts] == [("daily", 0.03)]


async def test_a_private_job_never_leaves_the_local_backend(cluster: Cluster) -> None:
    await cluster.start_router(HERMES_MAX_FAILOVER_ATTEMPTS="2")
    cluster.servers["talos"].set_fault(Fault.SERVER_ERROR)  # every call fails, retryably
    events = await cluster.outcome(await cluster.job(private=True))
    selected = of(events, "backend_selected")
    assert [s.backend for s in selected] == ["talos", "talos", "talos"]
    for s in selected:
        assert {c.backend: c.rejected for c in s.candidates}["remote"] == "private job: not a local backend"
    [abandoned] = of(events, "execution_abandoned")
    assert abandoned.error_code == "http_5xx" and abandoned.attempts == 3
    assert cluster.servers["remote"].chat_requests() == []


async def test_an_unhealthy_backend_is_skipped_then_recovers(cluster: Cluster) -> None:
    await cluster.start_router()
    await cluster.wait_health("talos", "healthy")
    cluster.servers["talos"].healthy = False  # every endpoint answers 503: probes and heartbeats fail
    await cluster.wait_health("talos", "unhealthy")
    events = await cluster.outcome(await cluster.job())
    [selected] = of(events, "backend_selected")
    assert selected.backend == "remote"
    assert {c.backend: c.rejected for c in selected.candidates}["talos"] == "unhealthy"
    assert cluster.servers["talos"].chat_requests() == []

    cluster.servers["talos"].healthy = True
    await cluster.wait_health("talos", "healthy")
    events = await cluster.outcome(await cluster.job())
    assert [s.backend for s in of(events, "backend_selected")] == ["talos"]
    marks = [e.type_name() for e in await stored_events(cluster.js, "hermes.evt.backend.talos.>")]
    assert marks == ["backend_marked_unhealthy", "backend_recovered"]


async def test_a_backend_no_live_edge_serves_is_not_eligible(cluster: Cluster) -> None:
    """Two enabled backends, remote preferred by score, but only talos has a live edge: jobs go to talos and
    remote's candidate says ``no_edge``. Once an edge of remote runs it is chosen again; killed (-9), it is
    ineligible again once ``HERMES_EDGE_STALE_SECONDS`` passed without its heartbeats."""
    cluster.edges["remote"].stop()
    await cluster.start_router(
        HERMES_PRIMARY_BACKEND="remote",
        BACKEND_TALOS_QUALITY="0.1",
        BACKEND_TALOS_SPEED="0.1",
        BACKEND_REMOTE_QUALITY="1.0",
        BACKEND_REMOTE_SPEED="1.0",
        HERMES_EDGE_STALE_SECONDS="2",
    )
    await cluster.wait_health("talos", "healthy")
    await cluster.wait_health("remote", "no_edge")
    events = await cluster.outcome(await cluster.job())
    assert [e.type_name() for e in events if e.type_name() == "job_deferred"] == []
    [selected] = of(events, "backend_selected")
    assert selected.backend == "talos"
    rejected = {c.backend: c.rejected for c in selected.candidates}
    assert rejected["remote"].startswith("no_edge"), rejected
    assert of(events, "execution_completed")[0].text == "talos says hi"
    assert cluster.servers["remote"].chat_requests() == []

    cluster.start_edge("remote")  # an edge serves remote again: the better score wins
    await cluster.wait_health("remote", "healthy")
    events = await cluster.outcome(await cluster.job())
    assert [s.backend for s in of(events, "backend_selected")] == ["remote"]

    cluster.edges["remote"].kill()  # gone without a word: its silence is noticed
    await cluster.wait_health("remote", "no_edge", timeout_s=10)
    events = await cluster.outcome(await cluster.job())
    assert [s.backend for s in of(events, "backend_selected")] == ["talos"]
    assert "backend_edge_lost" in cluster.router.log_text()


async def test_a_new_backend_by_configuration_only(cluster: Cluster, tmp_path: Path) -> None:
    """``gpt5``: a third provider nobody's code knows, declared in a backends file plus one edge process;
    code jobs are routed to it by ``HERMES_CODE_JOBS_BACKEND``."""
    gpt5 = await FakeOpenAIServer(
        reply=Reply(text="def solve(): ...", prompt_tokens=5, completion_tokens=7), models=["gpt-5"], api_key="sk-5"
    ).start()
    try:
        backends_file = tmp_path / "backends.toml"
        backends_file.write_text(
            f'[backends.gpt5]\ntype = "openai"\nhost = "http://127.0.0.1:{gpt5.port}"\n'
            f'models = ["gpt-5"]\nkey = "sk-5"\ncost_per_mtok_cents = 50\n'
        )
        extra = dict(HERMES_BACKENDS_ENABLED="talos,remote,gpt5", HERMES_BACKENDS_FILE=str(backends_file))
        cluster.env.update(extra)
        cluster.start_edge("gpt5")
        await cluster.start_router(HERMES_CODE_JOBS_BACKEND="gpt5")
        code = await cluster.outcome(await cluster.job(content="fix the bug in this python function"))
        [selected] = of(code, "backend_selected")
        assert (selected.backend, selected.strategy, selected.job_type) == ("gpt5", "job_type_route", "code")
        assert of(code, "execution_completed")[0].text == "def solve(): ..."
        chat = await cluster.outcome(await cluster.job(content="a nice walk in the park"))
        assert of(chat, "backend_selected")[0].backend == "talos"
        assert {b.name for b in (await cluster.backends()).backends} == {"talos", "remote", "gpt5"}
    finally:
        await gpt5.stop()


async def test_rebuilt_read_model_gives_the_same_scores_and_spend(cluster: Cluster) -> None:
    await cluster.start_router()
    await cluster.wait_health("talos", "healthy")
    cluster.servers["talos"].set_fault(Fault.SERVER_ERROR, times=1)
    for _ in range(3):
        await cluster.outcome(await cluster.job())
    await cluster.outcome(await cluster.job(backend="remote"))
    db = Path(cluster.env["HERMES_HOME"]) / "router.db"
    await _projected_whole_log(cluster.js, db)
    before = await cluster.backends()
    rows_before = _rows(db)
    cluster.router.stop()
    cluster.router = None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    await cluster.start_router()
    await _projected_whole_log(cluster.js, db)
    after = await cluster.backends()
    assert _rows(db) == rows_before
    assert [(b.name, b.scores, b.requests, b.failures, b.spend_today_cents) for b in after.backends] == [
        (b.name, b.scores, b.requests, b.failures, b.spend_today_cents) for b in before.backends
    ]
    assert after.budget.spent_today_cents == before.budget.spent_today_cents > 0
    remote = next(b for b in after.backends if b.name == "remote")
    talos = next(b for b in after.backends if b.name == "talos")
    assert talos.failures == 1 and remote.requests >= 2


async def _projected_whole_log(js, db: Path) -> None:
    """Wait until the router's read model has applied every event in the log (its stored position)."""

    async def caught_up() -> bool:
        last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT last_sequence FROM projection_position").fetchone()
        return row is not None and row[0] >= last

    await wait_until(caught_up, timeout_s=20, interval_s=0.1)


def _rows(db: Path) -> dict[str, list]:
    with sqlite3.connect(db) as conn:
        return {
            t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
            for t in ("backend_stats", "spend", "selections", "router_jobs", "thread_drafts")
        }


async def test_failover_reaches_an_anthropic_backend(cluster: Cluster) -> None:
    """The second provider type: Anthropic's Messages API behind the same generic edge."""
    claude = await FakeAnthropicServer(
        reply=Reply(text="claude says hi", prompt_tokens=9, completion_tokens=4), models=["claude-x"], api_key="sk-ant"
    ).start()
    try:
        cluster.env.update(
            HERMES_BACKENDS_ENABLED="talos,remote,claude",
            BACKEND_CLAUDE_TYPE="anthropic",
            BACKEND_CLAUDE_HOST=f"http://127.0.0.1:{claude.port}",
            BACKEND_CLAUDE_MODELS="claude-x",
            BACKEND_CLAUDE_KEY="sk-ant",
            BACKEND_CLAUDE_COST_PER_MTOK_CENTS="100",
        )
        cluster.start_edge("claude")
        await cluster.start_router()
        await cluster.set_enabled("remote", False)
        cluster.servers["talos"].set_fault(Fault.SERVER_ERROR, times=1)
        events = await cluster.outcome(await cluster.job())
        assert [(s.backend, s.attempt) for s in of(events, "backend_selected")] == [("talos", 1), ("claude", 2)]
        [done] = of(events, "execution_completed")
        assert (done.text, done.prompt_tokens, done.completion_tokens) == ("claude says hi", 9, 4)
        assert of(events, "cost_recorded")[0].cost_cents == pytest.approx(13 * 100 / 1_000_000)
    finally:
        await claude.stop()


async def test_weighted_balancing_follows_the_weights_over_1000_dispatches(js_client, bus_env, tmp_path) -> None:
    """Three remote backends weighted 5:3:2; their edges are only heartbeats and probe replies (the requests
    stay in their work queues), so the count per execution subject is exactly what the router dispatched."""
    nc, js = js_client
    weights = {"a": 5, "b": 3, "c": 2}
    env = dict(
        bus_env,
        METRICS_PORT="0",
        HERMES_BACKENDS_ENABLED="a,b,c",
        HERMES_LOAD_BALANCING_ENABLED="true",
        HERMES_LOAD_BALANCING_STRATEGY="weighted",
        HERMES_BACKEND_WEIGHTS=",".join(f"{k}={v}" for k, v in weights.items()),
    )
    for name in weights:
        env[f"BACKEND_{name.upper()}_HEALTH_CHECK_INTERVAL"] = "600"
        env[f"BACKEND_{name.upper()}_MODELS"] = f"model-{name}"
    async with EdgeBeats(nc, list(weights), models=[]):
        router = ServiceProcess("router", "hermes_router", env, tmp_path / "logs").start()
        try:
            counts = await _dispatch_1000(nc, js, router)
        finally:
            router.stop()
    assert sum(counts.values()) == 1000
    total_weight = sum(weights.values())
    for name, weight in weights.items():
        expected = 1000 * weight / total_weight
        assert abs(counts[name] - expected) <= 0.1 * expected, (name, counts)


async def _dispatch_1000(nc, js, router: ServiceProcess) -> dict[str, int]:
    """Append 1000 draft-1 jobs once every backend is healthy; returns the requests per execution subject once
    all 1000 are dispatched."""
    await wait_until(lambda: "router_started" in router.log_text(), timeout_s=30)

    async def all_healthy() -> bool:
        reply = await nc.request(subjects.QUERY_BACKENDS, b"{}", timeout=10)
        return {b.health for b in msgspec.json.decode(reply.data, type=BackendsReply).backends} == {"healthy"}

    await wait_until(all_healthy, timeout_s=15, interval_s=0.2)
    store = EventStore(js, "test")
    jobs = [
        JobQueued(
            event_id=new_id(),
            aggregate_id=new_id(),
            occurred_at=utcnow(),
            correlation_id=new_id(),
            job_id=new_id(),
            kind="draft1",
            messages=[ChatMessage(role="user", content=f"job {i}")],
        )
        for i in range(1000)
    ]
    for start in range(0, len(jobs), 100):
        await store.append(jobs[start : start + 100])

    async def dispatched() -> dict[str, int] | None:
        info = await js.stream_info(subjects.EXEC_STREAM, subjects_filter=subjects.EXEC_ALL)
        counts = {s.rsplit(".", 1)[-1]: n for s, n in (info.state.subjects or {}).items()}
        return counts if sum(counts.values()) >= 1000 else None

    return await wait_until(dispatched, timeout_s=120, interval_s=0.5)

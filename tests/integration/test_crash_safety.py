"""Crash safety, proven: the whole system as real processes (a real nats-server, the gateway, orchestrator,
backend-router, learner and talos-edge, and a loopback OpenAI-compatible model that takes about half a second
per call) takes 240 ideas or more, half through the gateway's ``POST /api/submit`` and half as ``SubmitIdea``
on NATS, in concurrent waves. While they run, each of orchestrator, backend-router, learner, talos-edge, gateway
and the NATS server itself is killed with SIGKILL, one at a time, in a seeded random order at seeded random
moments (``HERMES_CRASH_SEED`` replays the schedule; the seed is printed), and restarted after a short pause
(NATS on the same port and store directory).

Once everything is back, the test asserts:

* every accepted idea opened exactly one thread, and every thread in the log (including any a killed gateway
  published without answering) reached exactly one final state, ``ThreadCompleted`` or ``ThreadFailed``;
* no event is in ``HERMES_EVENTS`` twice (every ``event_id`` once, over the whole stream) and nothing was
  dead-lettered (the test sends no bad input, so a dead letter is lost work);
* exactly-once effects in the log: one ``JobQueued`` per job, every job ended, and every completed job has
  exactly one ``ExecutionCompleted``; at most one draft presented per draft number and one question proposal
  per thread;
* model calls, from the model's side: JetStream delivers at least once, so a call may legitimately run again,
  but only when its first run was cut off by a crash: the edge killed while the call ran (or before its ack),
  or the NATS server killed before it stored the edge's ack. So for every prompt (unique per thread) each call
  after the first must have an edge or NATS kill between its start and the previous call's start (the earlier
  call started before that victim's restart, the later one after its kill). This implies, per job, completed
  calls <= 1 + the edge/NATS kills during its execution, and it fails on any repeat without a crash (a
  redelivery for a slow ack, a second dispatch by the router);
* the read models are a pure function of the log: orchestrator.db, learner.db and router.db equal, table by
  table and row for row, a fresh replay of ``HERMES_EVENTS`` (read back from the server) into an empty
  database through each service's own projection code, up to the same stream position. No table is left out:
  none holds wall-clock or process-local state (``read_model_schema`` is the schema fingerprint the same code
  writes, ``question_templates`` the learner's seed templates, written the same way at every learner start).

"Back" means every thread is final AND no durable consumer has a message pending or unacked, so redeliveries of
what a killed consumer held (after its ack wait) have been handled before the log is checked. Threads finish
without anyone answering: every third idea allows no questions (``max_questions`` 0), the others complete on
draft 1 when the answer window (``HERMES_ANSWER_TIMEOUT_SECONDS=3``) closes. The run prints the seed, the kills
(when, how long down, model calls in flight), the time to settle and the counts it checked.

JetStream settings this depends on (docs/architecture.md lists them): the edge's consumer ack wait
(``HERMES_EDGE_ACK_WAIT_S``, 3 s here; ``in_progress`` every third of it while a call runs) is how long a killed
edge's call waits before it is redelivered; every other consumer uses :class:`hermes_proto.bus.ConsumerSpec`'s
defaults (ack wait 30 s, so a killed orchestrator's or learner's unacked messages come back 30 s later;
``max_deliver`` 5 with backoff 1, 2, 5, 10 s, after which a message is dead-lettered); the streams' duplicate
window (``dedup_window_s``, 600 s) is what turns a re-run's identical event ids into no-ops.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from conftest import NatsServer, open_event, stored_messages, wait_until
from fakes.llm_servers import FakeOpenAIServer, Reply
from procs import READY_MARKERS, model_env, service_processes

from hermes_proto import subjects
from hermes_proto.bus import EventStore, RawMessage
from hermes_proto.commands import SubmitIdea
from hermes_proto.ids import new_id, utcnow
from hermes_proto.projection import Projection

from hermes_cli.natsserver import free_port
from hermes_learner.bootstrap import open_read_model as open_learner_read_model
from hermes_orchestrator import readmodel as orchestrator_readmodel
from hermes_orchestrator.projection import Projection as OrchestratorProjection
from hermes_router import readmodel as router_readmodel
from hermes_router.bootstrap import RouterProjection

NATS_RECOVERY_S = 5.0
"""Seconds after a NATS restart within which a repeated delivery is put down to that crash (see below)."""

SERVICES = ("orchestrator", "router", "learner", "edge", "gateway")
TARGETS = (*SERVICES, "nats")
WAVES, WAVE_SIZE, WAVE_GAP_S = 10, 24, 5.0  # 240 ideas in 10 concurrent waves, spread over the kills (~55 s)
MAX_WAVES = 20
KILL_GAP_S = (1.5, 4.5)  # seconds before each kill (after the previous victim is back)
DOWN_S = (0.3, 2.0)  # seconds a victim stays dead
ACK_WAIT_S = 3
EDGE_CONCURRENCY = 8
REPLY = Reply(chunks=["Start ", "small, ", "then ", "grow ", "it."], chunk_delay_s=0.12, prompt_tokens=30)
TERMINAL = ("thread_completed", "thread_failed")
DBS = ("orchestrator", "learner", "router")
TOPICS = (
    "plan a vegetable garden on my balcony",
    "write a speech for my sister's wedding",
    "organise a team offsite in spring",
    "learn to bake sourdough bread",
    "refactor a python module",
    "analyse my monthly spending",
    "research electric bikes under 2000 euros",
    "start a small podcast",
)


@dataclass
class ModelCall:
    """One chat call the model received: ``prompt`` (the last message), monotonic ``started``, ``ended`` (any
    way) and ``finished`` (its whole reply written; a call whose client hung up is cancelled, never finished)."""

    prompt: str
    started: float
    ended: float | None = None
    finished: bool = False


class RecordingModel(FakeOpenAIServer):
    """The loopback OpenAI-compatible model, recording every chat call as a :class:`ModelCall`."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.calls: list[ModelCall] = []

    async def _serve_chat(self, request):  # noqa: ANN001, ANN202
        body = json.loads(await request.read())  # aiohttp caches the body for the recording below
        call = ModelCall(prompt=body["messages"][-1]["content"], started=time.monotonic())
        self.calls.append(call)
        try:
            response = await super()._serve_chat(request)
            call.finished = True
            return response
        finally:
            call.ended = time.monotonic()

    def in_flight(self) -> int:
        return sum(1 for c in self.calls if c.ended is None)


@dataclass
class Kill:
    """One SIGKILL: monotonic ``at`` (just before the signal) and ``restarted_at`` (just before the restart)."""

    target: str
    at: float
    calls_in_flight: int
    down_s: float = 0.0
    restarted_at: float = 0.0
    back_after_s: float = 0.0  # from the kill until it serves again


@dataclass
class Accepted:
    """A submission the system acknowledged (202 from the gateway, or JetStream's ack of the command)."""

    channel: str
    thread_id: str
    idea: str
    tries: int


@dataclass
class Run:
    """Everything the run observed; ``t0`` is the monotonic start of the submissions."""

    seed: int
    t0: float
    accepted: list[Accepted] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    submit_failures: Counter = field(default_factory=Counter)
    last_wave: float = 0.0  # the last wave of ideas accepted
    all_back: float = 0.0  # the last victim serves again
    settled: float = 0.0  # every thread final
    idle: float = 0.0  # no durable consumer has work pending or unacked
    durables: list[str] = field(default_factory=list)

    def rel(self, t: float) -> float:
        return round(t - self.t0, 1)


class Cluster:
    """The five services as processes around one nats-server, with kill / restart of any of them."""

    def __init__(self, nats: NatsServer, env: dict[str, str], logs: Path) -> None:
        self.nats = nats
        self.procs = service_processes(env, logs, SERVICES)

    async def start(self, name: str, timeout_s: float = 90) -> None:
        if name == "nats":
            await asyncio.to_thread(self.nats.start)
            return
        proc = self.procs[name]
        offset = proc.log_size()
        proc.start()
        await wait_until(
            lambda: proc.logged_since(offset, READY_MARKERS[name]) or not proc.alive(),
            timeout_s=timeout_s,
            interval_s=0.1,
        )
        assert proc.alive(), f"{name} did not come back:\n{proc.log_text()[-3000:]}"

    def kill(self, name: str) -> None:
        if name == "nats":
            self.nats.stop(signal.SIGKILL)
        else:
            self.procs[name].kill()

    def stop_all(self) -> None:
        # Gateway first (no new work), the router before the edge (a stopped edge would look unhealthy).
        for name in ("gateway", "orchestrator", "learner", "router", "edge"):
            self.procs[name].stop()

    def tails(self, chars: int = 2500) -> str:
        return "\n".join(f"--- {n}\n{p.log_text()[-chars:]}" for n, p in self.procs.items())


# ---- load ------------------------------------------------------------------------------------------------


async def submit_http(run: Run, http: httpx.AsyncClient, index: int, max_questions: int | None) -> None:
    """POST /api/submit until the gateway answers 202. Each try uses a new idea text: a try that fails after the
    gateway published (a kill mid-request) leaves a thread of its own, and prompts must stay unique per thread."""
    for tries in range(1, 1000):
        idea = f"idea {index} try {tries}: {TOPICS[index % len(TOPICS)]}"
        try:
            response = await http.post("/api/submit", json={"idea": idea, "max_questions": max_questions})
        except httpx.HTTPError as exc:
            run.submit_failures[f"http {type(exc).__name__}"] += 1
        else:
            if response.status_code == 202:
                run.accepted.append(Accepted("http", response.json()["data"]["thread_id"], idea, tries))
                return
            code = response.json().get("error", {}).get("code") if response.content else None
            run.submit_failures[f"http {response.status_code} {code}"] += 1
        await asyncio.sleep(0.3)
    raise AssertionError(f"idea {index} never accepted")


async def submit_nats(run: Run, store: EventStore, index: int, max_questions: int | None) -> None:
    """Publish one ``SubmitIdea`` until JetStream acks it; a retry repeats the same command id (deduplicated)."""
    idea = f"idea {index}: {TOPICS[index % len(TOPICS)]}"
    command = SubmitIdea(
        command_id=new_id(),
        issued_at=utcnow(),
        thread_id=new_id(),
        idea=idea,
        channel="external",
        max_questions=max_questions,
    )
    for tries in range(1, 1000):
        try:
            await asyncio.wait_for(store.send(command), timeout=5)
        except Exception as exc:  # NATS down or restarting: the same command again
            run.submit_failures[f"nats {type(exc).__name__}"] += 1
            await asyncio.sleep(0.3)
            continue
        run.accepted.append(Accepted("nats", command.thread_id, idea, tries))
        return
    raise AssertionError(f"idea {index} never accepted")


async def submit_all(run: Run, http: httpx.AsyncClient, store: EventStore, kills_done: asyncio.Event) -> None:
    """Waves of WAVE_SIZE ideas, each wave all at once, even indexes over HTTP, odd over NATS; every third idea
    allows no questions (completes on draft 1), the others wait for answers that never come. At least WAVES
    waves, and more while kills are still to come (slow restarts on a loaded machine), so every kill hits a
    system at work."""
    for wave in range(MAX_WAVES):
        if wave >= WAVES and kills_done.is_set():
            return
        batch = []
        for index in range(wave * WAVE_SIZE, (wave + 1) * WAVE_SIZE):
            max_questions = 0 if index % 3 == 0 else None
            batch.append(
                submit_http(run, http, index, max_questions)
                if index % 2 == 0
                else submit_nats(run, store, index, max_questions)
            )
        await asyncio.gather(*batch)
        run.last_wave = time.monotonic()
        await asyncio.sleep(WAVE_GAP_S)


async def kill_each_once(
    run: Run, cluster: Cluster, model: RecordingModel, rng: random.Random, done: asyncio.Event
) -> None:
    """Kill every target once, in a random order, each at a random moment, and bring it back before the next;
    then set ``done``."""
    for target in rng.sample(TARGETS, len(TARGETS)):
        await asyncio.sleep(rng.uniform(*KILL_GAP_S))
        if target == "edge":  # the interesting moment: in the middle of model calls
            await wait_until(lambda: model.in_flight() > 0, timeout_s=30, interval_s=0.05)
        kill = Kill(target, time.monotonic(), model.in_flight(), down_s=round(rng.uniform(*DOWN_S), 2))
        cluster.kill(target)
        run.kills.append(kill)
        await asyncio.sleep(kill.down_s)
        kill.restarted_at = time.monotonic()
        await cluster.start(target)
        kill.back_after_s = round(time.monotonic() - kill.at, 1)
        print(
            f"  SIGKILL {target:<12} at +{run.rel(kill.at):>5}s, {kill.calls_in_flight} model calls in flight, "
            f"down {kill.down_s}s, serving again after {kill.back_after_s}s",
            flush=True,
        )
    done.set()


# ---- reading the log -------------------------------------------------------------------------------------


async def thread_states(js) -> tuple[set[str], dict[str, list[str]]]:
    """(threads opened, thread id → its terminal event types) from the log as it is now."""
    opened = {
        subjects.aggregate_id_of(m.subject) for m in await stored_messages(js, "hermes.evt.thread.*.thread_opened")
    }
    ended: dict[str, list[str]] = defaultdict(list)
    for kind in TERMINAL:
        for m in await stored_messages(js, f"hermes.evt.thread.*.{kind}"):
            ended[subjects.aggregate_id_of(m.subject)].append(kind)
    return opened, ended


async def wait_settled(run: Run, js, timeout_s: float) -> None:
    """Until every accepted and every opened thread has a final event; on timeout, AssertionError naming the
    stuck threads and their events."""
    expected = {a.thread_id for a in run.accepted}

    async def settled() -> bool:
        try:
            opened, ended = await thread_states(js)
        except Exception:  # the test's own connection may still be reconnecting
            return False
        return expected <= opened and opened <= set(ended)

    try:
        await wait_until(settled, timeout_s=timeout_s, interval_s=2.0)
    except TimeoutError:
        opened, ended = await thread_states(js)
        stuck = sorted((expected | opened) - set(ended))
        detail = {}
        for thread_id in stuck[:8]:
            events = [await open_event(m.data) for m in await stored_messages(js, subjects.thread_events(thread_id))]
            detail[thread_id] = [e.type_name() for e in events]
        raise AssertionError(f"{len(stuck)} threads never reached a final state, e.g. {detail}") from None


async def durable_backlog(js) -> dict[str, tuple[int, int]]:
    """Durable consumer name → (messages not yet delivered, delivered but unacked), over the events, commands
    and execution streams. (The projections' ephemeral followers have no acks to wait for.)"""
    backlog = {}
    for stream in (subjects.EVENTS_STREAM, subjects.COMMANDS_STREAM, subjects.EXEC_STREAM):
        for info in await js.consumers_info(stream):
            if info.config.durable_name:
                backlog[info.name] = (info.num_pending, info.num_ack_pending)
    return backlog


async def wait_quiescent(js, timeout_s: float) -> list[str]:
    """Until no durable consumer has a message pending or unacked: a killed consumer's unacked messages come
    back after their ack wait and must be handled too, so that a late duplicate shows up. Returns the names of
    the durables; AssertionError with their backlog on timeout."""

    async def idle() -> list[str] | None:
        backlog = await durable_backlog(js)
        return sorted(backlog) if all(b == (0, 0) for b in backlog.values()) else None

    try:
        return await wait_until(idle, timeout_s=timeout_s, interval_s=1.0)
    except TimeoutError:
        raise AssertionError(f"consumers still busy: {await durable_backlog(js)}") from None


# ---- read models -----------------------------------------------------------------------------------------


FTS5_SHADOWS = ("_data", "_idx", "_docsize", "_config", "_content")
"""The tables SQLite's FTS5 keeps for a full-text index ``<name>``: its b-tree segments, whose layout depends on the
history of inserts and merges (a restart's rebuild, batch sizes), not only on the rows indexed."""


def table_rows(db: Path) -> dict[str, list[tuple]]:
    """Every table of a SQLite file, rows in a canonical order. A full-text index is checked instead of compared:
    FTS5's ``integrity-check`` proves it indexes exactly the rows of its content table (compared like any other
    table), and its segment tables are left out of the comparison."""
    con = sqlite3.connect(db)
    try:
        fts = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%USING fts5%'"
            )
        ]
        for name in fts:
            con.execute(
                f'INSERT INTO "{name}"("{name}", rank) VALUES (\'integrity-check\', 1)'
            )  # raises if they differ
        shadows = {f"{name}{suffix}" for name in fts for suffix in FTS5_SHADOWS}
        names = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
            if r[0] not in shadows and r[0] not in fts
        ]
        return {t: sorted(con.execute(f'SELECT * FROM "{t}"').fetchall(), key=repr) for t in names}
    finally:
        con.close()


def position_of(db: Path) -> int:
    """The stream sequence the read models of ``db`` have applied (0: none yet)."""
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT last_sequence FROM projection_position").fetchone()
        return row[0] if row else 0
    finally:
        con.close()


def fresh_projection(service: str, db: Path, js) -> Projection:
    """``service``'s own projection over an empty database at ``db``, set up as the service sets it up."""
    url = f"sqlite:///{db}"
    if service == "orchestrator":
        return OrchestratorProjection(orchestrator_readmodel.make_engine(url), js)
    if service == "router":
        return RouterProjection(router_readmodel.make_engine(url), js)
    return open_learner_read_model(url, js)  # the templates come from the code, as at every learner start


async def replay(service: str, db: Path, js, log: list[RawMessage], upto: int) -> None:
    projection = fresh_projection(service, db, js)
    messages = [m for m in log if m.sequence <= upto]
    for start in range(0, len(messages), 500):
        await projection.handle_batch(messages[start : start + 500])
    if messages:  # the writer stores what was folded; the rows are compared once it has
        await projection.require(messages[-1].sequence, timeout_s=120)
    await projection.stop()


def differences(live: dict[str, list[tuple]], rebuilt: dict[str, list[tuple]]) -> dict[str, str]:
    """Per differing table: row counts and a few rows found only on one side."""
    found = {}
    for table in sorted(set(live) | set(rebuilt)):
        a, b = live.get(table), rebuilt.get(table)
        if a == b:
            continue
        if a is None or b is None:
            found[table] = f"only in the {'replay' if a is None else 'live database'}"
            continue
        only_live = [r for r in a if r not in b][:3]
        only_replay = [r for r in b if r not in a][:3]
        found[table] = f"{len(a)} live rows vs {len(b)} replayed; only live: {only_live}; only replay: {only_replay}"
    return found


# ---- the test --------------------------------------------------------------------------------------------


@pytest.mark.timeout(480)  # ~1.5-2 min on an idle 2-core machine; the margin is for a loaded one
async def test_kill_9_of_every_service_and_nats_under_load(nats_server, bus_env, js_client, tmp_path):
    _, js = js_client
    seed = int(os.environ.get("HERMES_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"\ncrash-safety seed {seed} (HERMES_CRASH_SEED={seed} replays this schedule)", flush=True)
    dbs = {name: Path(bus_env["HERMES_HOME"]) / f"{name}.db" for name in DBS}
    async with RecordingModel(reply=REPLY, models=["fake"]) as model:
        web_port = free_port()
        env = dict(
            bus_env,
            METRICS_PORT="0",
            HERMES_WEB_PORT=str(web_port),
            HERMES_ANSWER_TIMEOUT_SECONDS="3",
            HERMES_EDGE_ACK_WAIT_S=str(ACK_WAIT_S),
            HERMES_EDGE_HEARTBEAT_S="0.5",
            HERMES_EDGE_CONCURRENCY=str(EDGE_CONCURRENCY),
            BACKEND_TALOS_MAX_CONCURRENT=str(EDGE_CONCURRENCY),
            BACKEND_TALOS_HEALTH_CHECK_INTERVAL="1",
            **model_env(model.port),
        )
        cluster = Cluster(nats_server, env, tmp_path / "logs")
        try:
            run = await load_and_kill(cluster, model, js, web_port, random.Random(seed), seed)
            dead = [n for n, p in cluster.procs.items() if not p.alive()]
            assert not dead, f"services died on their own: {dead}\n{cluster.tails()}"
            last_seq = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
            await wait_until(lambda: all(position_of(db) >= last_seq for db in dbs.values()), timeout_s=30)
        finally:
            cluster.stop_all()

        log = await stored_messages(js, subjects.EVENTS_ALL)
        events = [(m, await open_event(m.data)) for m in log]
        report(run, model, events)
        check_log(run, events)
        check_model_calls(run, model, [e for _, e in events])
    dead_letters = await stored_messages(js, subjects.DLQ_ALL)
    assert not dead_letters, [json.loads(m.data).get("reason") for m in dead_letters][:10]
    for name, db in dbs.items():
        rebuilt = tmp_path / f"replayed-{name}.db"
        await replay(name, rebuilt, js, log, upto=position_of(db))
        live = table_rows(db)
        print(f"{name}.db rows: { ({t: len(r) for t, r in live.items()}) }")
        diff = differences(live, table_rows(rebuilt))
        assert not diff, f"{name}.db differs from a fresh replay of the log: {diff}"


async def load_and_kill(
    cluster: Cluster, model: RecordingModel, js, web_port: int, rng: random.Random, seed: int
) -> Run:
    """Start the services, submit every wave while killing each target once, then wait until every thread is
    final and every durable consumer idle. Returns what was observed."""
    await asyncio.gather(*(cluster.start(name) for name in SERVICES))
    run = Run(seed, time.monotonic())
    kills_done = asyncio.Event()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{web_port}", timeout=10) as http:
        await asyncio.gather(
            submit_all(run, http, EventStore(js, "test"), kills_done),
            kill_each_once(run, cluster, model, rng, kills_done),
        )
    run.all_back = run.kills[-1].at + run.kills[-1].back_after_s
    await wait_settled(run, js, timeout_s=180)
    run.settled = time.monotonic()
    run.durables = await wait_quiescent(js, timeout_s=90)
    run.idle = time.monotonic()
    return run


def report(run: Run, model: RecordingModel, events: list) -> None:
    kinds = Counter(e.type_name() for _, e in events)
    reasons = Counter(
        getattr(e, "reason", None) or getattr(e, "error_code", None) for _, e in events if e.type_name() in TERMINAL
    )
    prompts = Counter(c.prompt for c in model.calls)
    print(
        f"threads accepted: {len(run.accepted)} "
        f"({sum(a.channel == 'http' for a in run.accepted)} over HTTP, "
        f"{sum(a.channel == 'nats' for a in run.accepted)} over NATS); "
        f"threads opened in the log: {kinds['thread_opened']}; failed submit tries: {dict(run.submit_failures)}"
    )
    print(
        f"last wave accepted at +{run.rel(run.last_wave)}s, last victim serving again at +{run.rel(run.all_back)}s; "
        f"every thread final at +{run.rel(run.settled)}s ({run.settled - max(run.all_back, run.last_wave):.1f}s "
        f"after both); durable consumers {run.durables} idle at +{run.rel(run.idle)}s"
    )
    print(
        f"final states: {dict(reasons)}; events in the log: {len(events)}; model calls: {len(model.calls)} "
        f"({sum(c.finished for c in model.calls)} finished), prompts called more than once: "
        f"{sum(n > 1 for n in prompts.values())}"
    )


def check_log(run: Run, events: list) -> None:
    """Exactly-once in the log: unique event ids, one opening and one end per thread, one outcome per job."""
    ids = Counter(e.event_id for _, e in events)
    doubled = {i: [(m.sequence, m.subject) for m, e in events if e.event_id == i] for i, n in ids.items() if n > 1}
    assert not doubled, f"events stored twice: {dict(list(doubled.items())[:5])}"

    per_thread: dict[str, Counter] = defaultdict(Counter)
    per_job: dict[str, Counter] = defaultdict(Counter)
    for _, e in events:
        if e.aggregate_type == "thread":
            per_thread[e.aggregate_id][e.type_name()] += 1
            if e.type_name() == "draft_presented":
                per_thread[e.aggregate_id][f"draft_presented_{e.draft_number}"] += 1
        job_id = getattr(e, "job_id", None)
        if job_id is not None:
            per_job[job_id][e.type_name()] += 1
    missing = [a for a in run.accepted if per_thread[a.thread_id]["thread_opened"] != 1]
    assert not missing, f"accepted but not opened exactly once: {missing[:5]}"
    ideas = {e.aggregate_id: e.idea for _, e in events if e.type_name() == "thread_opened"}
    assert all(ideas[a.thread_id] == a.idea for a in run.accepted)
    bad = {
        t: dict(c)
        for t, c in per_thread.items()
        if c["thread_opened"] != 1
        or sum(c[k] for k in TERMINAL) != 1
        or c["draft_presented_1"] > 1
        or c["draft_presented_2"] > 1
        or c["questions_proposed"] > 1
    }
    assert not bad, (
        f"threads without exactly one opening and one end, or with a repeated draft or proposal: "
        f"{dict(list(bad.items())[:5])}"
    )
    bad_jobs = {
        j: dict(c)
        for j, c in per_job.items()
        if c["job_queued"] != 1
        or c["execution_completed"] > 1
        or (c["execution_completed"] == 0 and not (c["execution_abandoned"] or c["job_failed"]))
    }
    assert not bad_jobs, f"jobs queued twice, completed twice or never ended: {dict(list(bad_jobs.items())[:5])}"


def check_model_calls(run: Run, model: RecordingModel, events: list) -> None:
    """Every completed job came from a finished model call, and every repeated call is explained by a crash."""
    prompt_of = {e.job_id: e.messages[-1].content for e in events if e.type_name() == "job_queued"}
    finished = {c.prompt for c in model.calls if c.finished}
    unbacked = [
        j for j in (e.job_id for e in events if e.type_name() == "execution_completed") if prompt_of[j] not in finished
    ]
    assert not unbacked, f"completed jobs without a finished model call: {unbacked[:5]}"
    assert {c.prompt for c in model.calls} <= set(prompt_of.values())

    # The edge was killed while calls ran: at least one was cut off (and, as its job completed, ran again).
    assert any(not c.finished for c in model.calls), "the edge kill cut off no model call"

    # The model stamps a call when it reads the request: a request a dying edge sent just before the kill may be
    # read a little after it, so an earlier call counts as hit by a crash if it started before the restart. A NATS
    # kill also loses what the server had not yet written to disk (the test server keeps NATS's default
    # sync_interval; deploy/ sets "always"): deliveries and acks of the last moments, so a request may be delivered
    # twice as the consumers come back, within NATS_RECOVERY_S of the restart (seen: both copies 0.6 s after it).
    crashes = [
        (k.at, k.restarted_at + (NATS_RECOVERY_S if k.target == "nats" else 0.0))
        for k in run.kills
        if k.target in ("edge", "nats")
    ]
    starts: dict[str, list[float]] = defaultdict(list)
    for call in model.calls:
        starts[call.prompt].append(call.started)
    unexplained = {}
    for prompt, times in starts.items():
        times.sort()
        for before, after in zip(times, times[1:], strict=False):
            if not any(before <= restarted and killed <= after for killed, restarted in crashes):
                unexplained[prompt] = [run.rel(t) for t in times]
    assert not unexplained, (
        f"model calls repeated without an edge or NATS crash in between (call starts, s): "
        f"{dict(list(unexplained.items())[:5])}; crashes (killed, restarted): "
        f"{[(run.rel(a), run.rel(b)) for a, b in crashes]}"
    )

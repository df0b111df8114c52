"""The orchestrator and backend-router as real processes over a real JetStream server.

The test plays the edge and the learner on the wire (publishing the events those services
publish, and the edge's heartbeats: ``fakes.edge_beats``), so the orchestrator's decisions are checked in isolation; the end-to-end test runs
the real ones.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import msgspec
import pytest
from conftest import open_event, thread_events, wait_until
from fakes.edge_beats import EdgeBeats
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_execution_request
from hermes_proto.commands import AnswerQuestions, CloseAnswerWindow, SubmitIdea
from hermes_proto.events import Answer, ExecutionCompleted, ExecutionFailed, Question, QuestionsProposed
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import ThreadQuery, ThreadReply

TABLES = ("threads", "jobs", "questions", "backend_selections", "projection_position")


class ThreadWatcher:
    """Collects every event of one thread, in log order, through an ordered push consumer."""

    def __init__(self) -> None:
        self.events: list = []
        self.sub = None
        self.sequence = 0
        """Stream sequence of the last event seen: a query with it as ``min_sequence`` reads your writes."""

    @classmethod
    async def start(cls, js, thread_id: str) -> ThreadWatcher:
        watcher = cls()

        async def on_msg(msg) -> None:
            watcher.events.append(await open_event(msg.data))
            watcher.sequence = msg.metadata.sequence.stream

        watcher.sub = await js.subscribe(subjects.thread_events(thread_id), ordered_consumer=True, cb=on_msg)
        return watcher

    @property
    def types(self) -> list[str]:
        return [e.type_name() for e in self.events]

    def of(self, event_type: str) -> list:
        return [e for e in self.events if e.type_name() == event_type]


async def next_exec(js, durable: str = "test-edge"):
    sub = await js.pull_subscribe(subjects.exec_subject("talos"), durable=durable, stream=subjects.EXEC_STREAM)
    msgs = await sub.fetch(1, timeout=10)
    await msgs[0].ack()
    await sub.unsubscribe()
    return decode_execution_request(msgs[0].data)


async def complete(store: EventStore, req, text: str) -> None:
    await store.append(
        [
            ExecutionCompleted(
                event_id=new_id(),
                aggregate_id=req.thread_id,
                occurred_at=utcnow(),
                correlation_id=req.correlation_id,
                causation_id=req.request_id,
                job_id=req.job_id,
                backend=req.backend,
                model=req.model,
                text=text,
                prompt_tokens=11,
                completion_tokens=7,
                latency_ms=12.5,
            )
        ]
    )


async def query(nc, thread_id: str, min_sequence: int = 0) -> ThreadReply:
    """The orchestrator's view of the thread, once its read model applied ``min_sequence`` (0: as it is now)."""
    request = ThreadQuery(thread_id=thread_id, min_sequence=min_sequence)
    reply = await nc.request(subjects.QUERY_THREAD, msgspec.json.encode(request), timeout=5)
    return msgspec.json.decode(reply.data, type=ThreadReply)


def dump(db: Path) -> dict[str, list[tuple]]:
    con = sqlite3.connect(db)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    finally:
        con.close()


@pytest.fixture(autouse=True)
async def talos_edge_beats(js_client):
    """The test is talos's edge: it says so on the bus before any router starts."""
    async with EdgeBeats(js_client[0], ["talos"]) as beats:
        yield beats


@pytest.fixture
def services(bus_env, tmp_path):
    env = dict(bus_env, HERMES_ANSWER_TIMEOUT_SECONDS="600", METRICS_PORT="0", BACKEND_TALOS_MODELS="smollm2")
    procs = {
        "orchestrator": ServiceProcess("orchestrator", "hermes_orchestrator", env, tmp_path / "logs").start(),
        "router": ServiceProcess("router", "hermes_router", env, tmp_path / "logs").start(),
    }
    yield procs, env
    for p in procs.values():
        p.stop()


async def submit(store: EventStore, idea: str, **kw) -> str:
    thread_id = new_id()
    await store.send(SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id=thread_id, idea=idea, **kw))
    return thread_id


async def test_idea_to_draft2_and_rebuild(js_client, services, tmp_path):
    nc, js = js_client
    procs, env = services
    store = EventStore(js, "test")
    thread_id = await submit(store, "plan a balcony vegetable garden")
    watch = await ThreadWatcher.start(js, thread_id)

    req = await next_exec(js)
    assert req.thread_id == thread_id and req.backend == "talos" and req.model == "smollm2"
    assert req.messages[-1].content == "plan a balcony vegetable garden"
    await wait_until(lambda: len(watch.events) >= 3)
    assert watch.types[:3] == ["thread_opened", "job_queued", "backend_selected"]

    await complete(store, req, "Draft one: pots, soil, sun.")
    await wait_until(lambda: watch.of("draft_presented"))
    reply = await query(nc, thread_id, watch.sequence)
    assert reply.found and reply.thread.status == "awaiting_answers"
    assert reply.thread.draft1 == "Draft one: pots, soil, sun."

    questions = [
        Question(question_id=f"q{i}", template_id=f"t{i}", category=c, text=f"What {c}?")
        for i, c in enumerate(("intent", "constraint"))
    ]
    await store.append(
        [
            QuestionsProposed(
                event_id=new_id(),
                aggregate_id=thread_id,
                occurred_at=utcnow(),
                correlation_id="c",
                questions=questions,
                idea_type="planning",
                clarity=0.4,
            )
        ]
    )
    await wait_until(lambda: _query_has_questions(nc, thread_id))
    await store.send(
        AnswerQuestions(
            command_id=new_id(),
            issued_at=utcnow(),
            thread_id=thread_id,
            answers=[
                Answer(question_id="q1", text="only 2 square metres"),
                Answer(question_id="unknown", text="ignored"),
            ],
        )
    )
    req2 = await next_exec(js)
    assert req2.job_id != req.job_id
    prompt = req2.messages[-1].content
    assert "only 2 square metres" in prompt and "Draft one: pots, soil, sun." in prompt and "ignored" not in prompt
    await complete(store, req2, "Draft two: a 2 m² plan.")
    await wait_until(lambda: watch.of("thread_completed"))
    assert len(watch.of("draft_presented")) == 2 and len(watch.of("thread_completed")) == 1
    reply = await query(nc, thread_id, watch.sequence)
    assert reply.thread.status == "completed" and reply.thread.final_draft_number == 2
    assert reply.thread.draft2 == "Draft two: a 2 m² plan."
    assert [q.answer for q in reply.thread.questions] == [None, "only 2 square metres"]
    assert {j.status for j in reply.thread.jobs} == {"completed"}

    # Delete the read models and restart: the replay rebuilds identical rows.
    db = Path(env["HERMES_HOME"]) / "orchestrator.db"
    procs["orchestrator"].stop()
    before = dump(db)
    assert len(before["threads"]) == 1 and len(before["jobs"]) == 2 and len(before["backend_selections"]) == 2
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    procs["orchestrator"] = ServiceProcess("orchestrator2", "hermes_orchestrator", env, tmp_path / "logs").start()
    await wait_until(lambda: _query_status(nc, thread_id, "completed"), timeout_s=20)
    procs["orchestrator"].stop()
    assert dump(db) == before


async def test_no_answers_completes_on_draft1_after_timeout(js_client, bus_env, tmp_path):
    nc, js = js_client
    env = dict(bus_env, HERMES_ANSWER_TIMEOUT_SECONDS="1.5", METRICS_PORT="0")
    procs = [
        ServiceProcess(n, m, env, tmp_path / "logs").start()
        for n, m in (("orchestrator", "hermes_orchestrator"), ("router", "hermes_router"))
    ]
    try:
        store = EventStore(js, "test")
        thread_id = await submit(store, "write a haiku about autumn")
        watch = await ThreadWatcher.start(js, thread_id)
        req = await next_exec(js)
        await complete(store, req, "Leaves fall.")
        await wait_until(lambda: watch.of("thread_completed"), timeout_s=15)
        done = watch.of("thread_completed")
        assert len(done) == 1 and done[0].reason == "answer_timeout" and done[0].final_draft_number == 1
    finally:
        for p in procs:
            p.stop()


async def test_failed_draft1_fails_thread_and_bad_command_is_dead_lettered(js_client, services):
    nc, js = js_client
    store = EventStore(js, "test")
    thread_id = await submit(store, "summarise my notes")
    watch = await ThreadWatcher.start(js, thread_id)
    req = await next_exec(js)
    # A failure retrying cannot fix (401): the router gives up at once, the orchestrator fails the thread.
    await store.append(
        [
            ExecutionFailed(
                event_id=new_id(),
                aggregate_id=thread_id,
                occurred_at=utcnow(),
                correlation_id="c",
                job_id=req.job_id,
                backend="talos",
                model="m",
                error_code="auth_failed",
                message="invalid api key",
                retryable=False,
            )
        ]
    )
    await wait_until(lambda: _query_status(nc, thread_id, "failed"))
    await wait_until(lambda: watch.of("thread_failed"))
    assert watch.types.count("job_failed") == 1 and watch.types.count("thread_failed") == 1

    await js.publish("hermes.cmd.submit_idea", b'{"type":"submit_idea","idea":42}')
    await js.publish("hermes.cmd.submit_idea", b"\xff not json")
    dlq = await js.pull_subscribe(subjects.DLQ_ALL, durable="t-dlq", stream=subjects.DLQ_STREAM)
    msgs = []
    while len(msgs) < 2:
        msgs += await dlq.fetch(2 - len(msgs), timeout=10)
    reasons = sorted(msgspec.json.decode(m.data)["reason"] for m in msgs)
    assert reasons == ["invalid_json", "validation_failed"]
    # The consumer keeps working after the poison messages.
    other = await submit(store, "another idea")
    assert (await next_exec(js)).thread_id == other


async def _query_has_questions(nc, thread_id: str) -> bool:
    reply = await query(nc, thread_id)
    return reply.found and len(reply.thread.questions) == 2


async def _query_status(nc, thread_id: str, status: str) -> bool:
    try:
        reply = await query(nc, thread_id)
    except Exception:
        return False
    return reply.found and reply.thread.status == status


async def test_a_window_closing_as_no_questions_arrive_ends_the_thread_once(js_client, services):
    """The commands consumer and the reactor run concurrently: ``CloseAnswerWindow`` and an empty
    ``QuestionsProposed`` arriving together would each read "awaiting answers" and complete the thread, twice
    (different causes, so different event ids). Decisions of one thread are serialised."""
    nc, js = js_client
    store = EventStore(js, "test")
    threads = [await submit(store, f"idea number {i}") for i in range(12)]
    for _ in threads:
        req = await next_exec(js)
        await complete(store, req, "a first draft")
    await wait_until(lambda: _all_awaiting(nc, threads), timeout_s=30)

    async def both(thread_id: str) -> None:
        questions = QuestionsProposed(
            event_id=new_id(),
            aggregate_id=thread_id,
            occurred_at=utcnow(),
            correlation_id="c",
            questions=[],
            idea_type="general",
            clarity=0.95,
        )
        close = CloseAnswerWindow(command_id=new_id(), issued_at=utcnow(), thread_id=thread_id)
        await asyncio.gather(store.append([questions]), store.send(close))

    await asyncio.gather(*(both(t) for t in threads))
    await wait_until(lambda: _all_status(nc, threads, "completed"), timeout_s=30)
    await asyncio.sleep(1.0)  # room for a second, wrong completion
    for thread_id in threads:
        ends = [e for e in await thread_events(js, thread_id) if e.type_name() == "thread_completed"]
        assert len(ends) == 1, f"{thread_id} completed {len(ends)} times"


async def _all_awaiting(nc, threads: list[str]) -> bool:
    return await _all_status(nc, threads, "awaiting_answers")


async def _all_status(nc, threads: list[str], status: str) -> bool:
    for thread_id in threads:
        reply = await query(nc, thread_id)
        if not reply.found or reply.thread.status != status:
            return False
    return True

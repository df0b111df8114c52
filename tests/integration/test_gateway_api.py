"""The gateway as a real process over real HTTP, a real JetStream server and the real orchestrator.

Reads (status, job results, thread lists, health) are answered by the real orchestrator
(``hermes_orchestrator.bootstrap.run``, in a thread of the test process) over ``hermes.query.*``; the commands the
gateway publishes are consumed by it. Where a thread must get past "drafting", :class:`Peers` publishes
what the backend-router, talos-edge and learner publish on the wire (``BackendSelected``, token deltas,
``ExecutionCompleted``/``ExecutionFailed``, ``QuestionsProposed``) with ids derived from their causes as
those services derive them; every orchestrator event (``ThreadOpened``, ``DraftPresented``,
``ThreadCompleted``...) comes from the orchestrator itself. Tests of the gateway alone (input rules,
SSE plumbing, lifecycle) run without it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import httpx
import msgspec
import nats
import pytest
from conftest import open_command, open_event, wait_until
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from procs import ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from hermes_proto import keyring, subjects
from hermes_proto.base import Event
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_command, encode
from hermes_proto.commands import AnswerQuestions, SubmitIdea
from hermes_proto.events import (
    BackendSelected,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    ExecutionFailed,
    JobQueued,
    Question,
    QuestionsProposed,
)
from hermes_proto.execution import TokenDelta
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.queries import QUERY_THREADS, JobQuery, ThreadListQuery, ThreadQuery, ThreadReply

from hermes_cli.natsserver import free_port
from hermes_orchestrator import bootstrap as orchestrator_bootstrap
from hermes_orchestrator.config import OrchestratorSettings

MAX_INPUT = 10_000  # HERMES_MAX_INPUT_LENGTH's default

# (template id, category, text, suggestions) of the questions the learner proposes in these tests.
QUESTION_SPECS = [
    ("garden-intent", "intent", "What is the garden for?", ["vegetables", "flowers"]),
    ("balcony-scope", "scope", "How big is the balcony?", []),
]


# --------------------------------------------------------------------------- harness: processes


@dataclass
class Gateway:
    """A running ``python -m hermes_gateway`` and where to reach it."""

    process: ServiceProcess
    url: str

    def log_records(self) -> list[dict]:
        records = []
        for line in self.process.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    async def metrics(self, client: httpx.AsyncClient) -> dict[str, list]:
        """``{metric family name: [samples]}`` parsed from ``/metrics``."""
        response = await client.get(f"{self.url}/metrics")
        assert response.status_code == 200
        return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


async def start_gateway(bus_env: dict[str, str], log_dir: Path, **extra_env: str) -> Gateway:
    """``python -m hermes_gateway`` on a free loopback port with ``extra_env``, once it answers HTTP. No queue cap
    unless ``extra_env`` sets one: with a cap, a submission the orchestrator cannot count is refused (503
    ``queue_unknown``), and most of these tests run the gateway without an orchestrator."""
    port = free_port()
    env = {
        **bus_env,
        "HERMES_WEB_PORT": str(port),
        "HERMES_WEB_HOST": "127.0.0.1",
        "HERMES_MAX_QUEUED_JOBS": "0",
        **extra_env,
    }
    process = ServiceProcess("gateway", "hermes_gateway", env, log_dir).start()
    url = f"http://127.0.0.1:{port}"

    async def answering() -> bool:
        assert process.alive(), process.log_text()
        try:
            async with httpx.AsyncClient() as client:
                await client.get(f"{url}/api/system/health", timeout=2)
            return True
        except httpx.TransportError:
            return False

    await wait_until(answering, timeout_s=30, interval_s=0.1)
    return Gateway(process, url)


@dataclass
class Orchestrator:
    """The real orchestrator: its own ``bootstrap.run`` on its own event loop in a daemon thread (a process of
    its own in all but the interpreter start-up), read models in a SQLite file under ``home``, log lines in
    ``log_path``, until :meth:`stop`."""

    thread: threading.Thread
    loop: asyncio.AbstractEventLoop
    stop_event: asyncio.Event
    outcome: Future  # resolved when ``run`` returns (or raises)
    log_path: Path

    winding_down: ClassVar[list[threading.Thread]] = []  # stopped without waiting (see :meth:`stop`)

    @classmethod
    async def start(cls, nc: NATS, nats_url: str, home: Path, log_dir: Path) -> Orchestrator:
        """Start it and wait until it answers ``hermes.query.health`` (read models caught up). One stopped
        earlier without waiting is waited for first, so two never share this process's logging."""
        await asyncio.to_thread(cls.join_stopped)
        settings = OrchestratorSettings(
            nats_url=nats_url,
            hermes_home=home,
            metrics_port=0,
            log_file=log_dir / "orchestrator.log",
            hermes_answer_timeout_seconds=600.0,
        )
        started: Future = Future()
        outcome: Future = Future()

        async def serve() -> None:
            stop = asyncio.Event()
            started.set_result((asyncio.get_running_loop(), stop))
            await orchestrator_bootstrap.run(settings, stop)

        def main() -> None:
            try:
                asyncio.run(serve())
                outcome.set_result(None)
            except BaseException as exc:  # reported by check_running / stop
                outcome.set_exception(exc)

        thread = threading.Thread(target=main, name="orchestrator", daemon=True)
        thread.start()
        loop, stop = await asyncio.wait_for(asyncio.wrap_future(started), timeout=10)
        orchestrator = cls(thread, loop, stop, outcome, settings.log_file)

        async def answering() -> bool:
            orchestrator.check_running()
            try:
                await nc.request(subjects.QUERY_HEALTH, b"", timeout=0.5)
                return True
            except (nats.errors.NoRespondersError, nats.errors.TimeoutError):
                return False

        try:
            await wait_until(answering, timeout_s=30)
        except BaseException:
            await orchestrator.stop()
            raise
        return orchestrator

    def check_running(self) -> None:
        if self.outcome.done():
            raise AssertionError(f"the orchestrator exited: {self.outcome.exception()!r}")

    async def stop(self, wait: bool = True) -> None:
        """Ask ``run`` to return. It takes up to one consumer fetch expiry (2 s): ``wait=False`` lets it wind
        down while the test's teardown goes on (the next :meth:`start` waits for it); its log then ends with
        reconnect warnings, as the test's NATS server is gone before it has closed its connection."""
        self.loop.call_soon_threadsafe(self.stop_event.set)
        if not wait:
            self.winding_down.append(self.thread)
            return
        await asyncio.wait_for(asyncio.wrap_future(self.outcome), timeout=15)

    @classmethod
    def join_stopped(cls) -> None:
        while cls.winding_down:
            cls.winding_down.pop().join(timeout=15)


async def start_orchestrator(bus_env: dict[str, str], nc: NATS, log_dir: Path) -> Orchestrator:
    return await Orchestrator.start(nc, bus_env["NATS_URL"], Path(bus_env["HERMES_HOME"]), log_dir)


# --------------------------------------------------------------------------- harness: the other services


@dataclass
class Peers:
    """Publishes what the backend-router, talos-edge and learner publish, the way they publish it: events
    appended with ``EventStore``, ids derived from the cause (``derived_id(cause_id, name)``), correlation
    id copied from the cause; token deltas on core NATS. Also finds the orchestrator's events in the log."""

    js: JetStreamContext
    nc: NATS

    def __post_init__(self) -> None:
        self.store = EventStore(self.js, "test-peers")

    async def last(
        self, thread_id: str, event_type: str, where: Callable[[Event], bool] = lambda e: True, timeout_s: float = 10.0
    ) -> tuple[int, Event]:
        """``(stream sequence, event)`` of the thread's latest ``event_type`` once it satisfies ``where``."""

        async def found() -> tuple[int, Event] | None:
            try:
                msg = await self.js.get_last_msg(subjects.EVENTS_STREAM, f"hermes.evt.thread.{thread_id}.{event_type}")
            except NotFoundError:
                return None
            event = await open_event(msg.data)
            return (msg.seq, event) if where(event) else None

        return await wait_until(found, timeout_s)

    async def job(self, thread_id: str, kind: str = "draft1") -> JobQueued:
        """The orchestrator's ``JobQueued`` of ``kind`` for the thread (waits for it)."""
        return (await self.last(thread_id, "job_queued", lambda e: e.kind == kind))[1]

    async def draft(self, thread_id: str, number: int = 1) -> tuple[int, DraftPresented]:
        return await self.last(thread_id, "draft_presented", lambda e: e.draft_number == number)

    @staticmethod
    def _caused_by(cause: Event, name: str, cause_id: str | None = None) -> dict:
        cause_id = cause_id or cause.event_id
        return dict(
            event_id=derived_id(cause_id, name),
            aggregate_id=cause.aggregate_id,
            occurred_at=utcnow(),
            correlation_id=cause.correlation_id,
            causation_id=cause_id,
        )

    async def _append(self, event: Event) -> int:
        [seq] = await self.store.append([event])
        return seq

    async def select(self, job: JobQueued, backend: str = "talos", model: str = "smollm2") -> int:
        """The router's ``BackendSelected`` for ``job``; returns its stream sequence."""
        return await self._append(
            BackendSelected(
                **self._caused_by(job, "backend_selected"),
                job_id=job.job_id,
                backend=backend,
                model=model,
                reason="the only healthy backend",
            )
        )

    async def tokens(self, job: JobQueued, pieces: list[str], first_seq: int = 0) -> None:
        """The edge's token deltas of ``job`` (``seq`` from ``first_seq``; the last one ``done``)."""
        for offset, text in enumerate(pieces):
            delta = TokenDelta(job_id=job.job_id, seq=first_seq + offset, text=text, done=offset == len(pieces) - 1)
            await self.nc.publish(subjects.token_subject(job.aggregate_id, job.job_id), encode(delta))
        await self.nc.flush()

    def _outcome(self, job: JobQueued) -> dict:
        request_id = derived_id(job.event_id, "execution_requested")  # the router's ExecutionRequested
        return self._caused_by(job, "execution_outcome", cause_id=request_id)

    async def complete(
        self,
        job: JobQueued,
        text: str,
        prompt_tokens: int = 20,
        completion_tokens: int = 9,
        latency_ms: float = 1500.0,
        backend: str = "talos",
        model: str = "smollm2",
    ) -> int:
        """The edge's ``ExecutionCompleted`` for ``job``; returns its stream sequence."""
        return await self._append(
            ExecutionCompleted(
                **self._outcome(job),
                job_id=job.job_id,
                backend=backend,
                model=model,
                text=text,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                latency_ms=latency_ms,
            )
        )

    async def fail(self, job: JobQueued, error_code: str, message: str) -> int:
        """The edge's ``ExecutionFailed`` (not retryable) for ``job``, then the router's ``ExecutionAbandoned``."""
        await self._append(
            ExecutionFailed(
                **self._outcome(job),
                job_id=job.job_id,
                backend="talos",
                model="smollm2",
                error_code=error_code,
                message=message,
                retryable=False,
            )
        )
        return await self._append(
            ExecutionAbandoned(
                **self._caused_by(job, "execution_abandoned"),
                job_id=job.job_id,
                error_code=error_code,
                message=message,
                attempts=1,
            )
        )

    async def no_backend(self, job: JobQueued) -> int:
        """The router's ``ExecutionAbandoned`` when no backend can take ``job``."""
        return await self._append(
            ExecutionAbandoned(
                **self._caused_by(job, "no_backend"),
                job_id=job.job_id,
                error_code="no_backend",
                message="no backend is up",
            )
        )

    async def propose(
        self, draft: DraftPresented, specs: list[tuple] = QUESTION_SPECS
    ) -> tuple[int, QuestionsProposed]:
        """The learner's ``QuestionsProposed`` after ``draft`` (question id = ``derived_id(draft id, template
        id)``); ``specs`` empty proposes none."""
        questions = [
            Question(
                question_id=derived_id(draft.event_id, template_id),
                template_id=template_id,
                category=category,
                text=text,
                suggestions=suggestions,
            )
            for template_id, category, text, suggestions in specs
        ]
        proposed = QuestionsProposed(
            **self._caused_by(draft, "questions_proposed"), questions=questions, idea_type="plan", clarity=0.4
        )
        return await self._append(proposed), proposed


async def thread_log(js: JetStreamContext, thread_id: str) -> list[tuple[int, Event]]:
    """Every ``(sequence, event)`` of the thread in ``HERMES_EVENTS``, in log order."""
    state = (await js.stream_info(subjects.EVENTS_STREAM)).state
    prefix = f"hermes.evt.thread.{thread_id}."
    out = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        raw = await js.get_msg(subjects.EVENTS_STREAM, seq)
        if raw.subject.startswith(prefix):
            out.append((seq, await open_event(raw.data)))
    return out


@dataclass
class Tap:
    """Records every message on ``subject`` (core NATS, without answering): the commands the gateway publishes
    (the orchestrator consumes them and the work queue drops them) or the queries it asks."""

    decode: Callable[[str, bytes], object]
    seen: list[tuple[object, dict]] = field(default_factory=list)
    sub: object = None

    @classmethod
    async def start(cls, nc: NATS, subject: str, decode: Callable[[str, bytes], object]) -> Tap:
        tap = cls(decode)

        async def record(msg) -> None:
            await keyring.ready((msg.data,))  # a sealed command's key, before the synchronous decode
            tap.seen.append((tap.decode(msg.subject, msg.data), msg.headers or {}))

        tap.sub = await nc.subscribe(subject, cb=record)
        await nc.flush()
        return tap

    def messages(self, kind: type | None = None) -> list:
        return [m for m, _ in self.seen if kind is None or isinstance(m, kind)]


QUERY_TYPES = {subjects.QUERY_THREAD: ThreadQuery, subjects.QUERY_JOB: JobQuery, QUERY_THREADS: ThreadListQuery}


async def command_tap(nc: NATS) -> Tap:
    return await Tap.start(nc, subjects.COMMANDS_ALL, lambda _subject, data: decode_command(data))


async def query_tap(nc: NATS) -> Tap:
    return await Tap.start(
        nc,
        "hermes.query.>",
        lambda subject, data: msgspec.json.decode(data, type=QUERY_TYPES[subject]) if subject in QUERY_TYPES else data,
    )


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
async def gateway(bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Gateway]:
    """The gateway alone (no orchestrator)."""
    gw = await start_gateway(bus_env, tmp_path / "logs")
    yield gw
    gw.process.stop()


@pytest.fixture(scope="module", autouse=True)
def orchestrators_wound_down() -> Iterator[None]:
    """No orchestrator thread outlives the module (one stopped without waiting may still be closing)."""
    yield
    Orchestrator.join_stopped()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20) as client:
        yield client


@dataclass
class Stack:
    """The gateway and the real orchestrator on one NATS server, plus the other services' part (``peers``)."""

    gateway: Gateway
    orchestrator: Orchestrator
    peers: Peers

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture
async def stack(bus_env: dict[str, str], js_client, tmp_path: Path) -> AsyncIterator[Stack]:
    """Ready when the gateway's health check finds the orchestrator answering."""
    nc, js = js_client
    gateway_starting = asyncio.create_task(start_gateway(bus_env, tmp_path / "logs"))  # a process: starts meanwhile
    try:
        orchestrator = await start_orchestrator(bus_env, nc, tmp_path / "logs")
    except BaseException:
        (await gateway_starting).process.stop()
        raise
    try:
        gw = await gateway_starting
    except BaseException:
        await orchestrator.stop()
        raise

    async def healthy() -> bool:
        async with httpx.AsyncClient() as client:
            return (await client.get(f"{gw.url}/api/system/health", timeout=5)).status_code == 200

    try:
        await wait_until(healthy, timeout_s=20, interval_s=0.1)
        yield Stack(gw, orchestrator, Peers(js, nc))
    finally:
        await orchestrator.stop(wait=False)
        gw.process.stop()


# --------------------------------------------------------------------------- helpers


async def submit(
    stack_or_gw: Stack | Gateway, http: httpx.AsyncClient, idea: str = "plan a balcony garden", **fields
) -> str:
    """``POST /api/submit``; returns the new thread id."""
    response = await http.post(f"{stack_or_gw.url}/api/submit", json={"idea": idea, **fields})
    assert response.status_code == 202, response.text
    return response.json()["data"]["thread_id"]


async def settled_status(stack: Stack, http: httpx.AsyncClient, thread_id: str, min_sequence: int) -> dict:
    """The thread view once the orchestrator has applied ``min_sequence`` (read-your-writes)."""
    response = await http.get(f"{stack.url}/api/threads/{thread_id}/status", params={"min_sequence": min_sequence})
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def drafting_thread(
    stack: Stack, http: httpx.AsyncClient, idea: str = "plan a balcony garden", **fields
) -> tuple[str, JobQueued]:
    """A thread the orchestrator opened, with draft 1 queued and nobody working on it."""
    thread_id = await submit(stack, http, idea, **fields)
    return thread_id, await stack.peers.job(thread_id)


async def awaiting_thread(
    stack: Stack, http: httpx.AsyncClient, idea: str = "plan a balcony garden"
) -> tuple[str, list[Question]]:
    """A thread with draft 1 presented ("Draft one.", 12 + 34 tokens in 120.5 ms on talos/smollm2) and the
    learner's two questions (QUESTION_SPECS), awaiting answers."""
    thread_id, job = await drafting_thread(stack, http, idea)
    await stack.peers.select(job)
    await stack.peers.complete(job, "Draft one.", prompt_tokens=12, completion_tokens=34, latency_ms=120.5)
    _, draft = await stack.peers.draft(thread_id)
    seq, proposed = await stack.peers.propose(draft)
    view = await settled_status(stack, http, thread_id, seq)
    assert view["status"] == "awaiting_answers"
    assert [q["question_id"] for q in view["questions"]] == [q.question_id for q in proposed.questions]
    return thread_id, proposed.questions


async def completed_thread(stack: Stack, http: httpx.AsyncClient, idea: str = "write a haiku") -> str:
    """A thread completed on draft 1 (``max_questions`` 0, reason ``no_questions``)."""
    thread_id, job = await drafting_thread(stack, http, idea, max_questions=0)
    await stack.peers.complete(job, "An old silent pond.")
    seq, done = await stack.peers.last(thread_id, "thread_completed")
    assert done.reason == "no_questions"
    assert (await settled_status(stack, http, thread_id, seq))["status"] == "completed"
    return thread_id


async def commands_published(js) -> int:
    """How many commands ever reached HERMES_COMMANDS (its last sequence: consumed ones count too)."""
    return (await js.stream_info(subjects.COMMANDS_STREAM)).state.last_seq


async def read_commands(js) -> list[tuple[object, dict]]:
    """Every command still in HERMES_COMMANDS (decoded) with its NATS headers, in order (no orchestrator)."""
    state = (await js.stream_info(subjects.COMMANDS_STREAM)).state
    out = []
    for seq in range(state.first_seq, state.last_seq + 1) if state.messages else ():
        raw = await js.get_msg(subjects.COMMANDS_STREAM, seq)
        out.append((await open_command(raw.data), raw.headers or {}))
    return out


async def ask_orchestrator(nc: NATS, thread_id: str) -> ThreadReply:
    """The orchestrator's own answer to a thread query (the source of truth for what the gateway shows)."""
    reply = await nc.request(subjects.QUERY_THREAD, encode(ThreadQuery(thread_id=thread_id)), timeout=5)
    return msgspec.json.decode(reply.data, type=ThreadReply)


@dataclass
class SseStream:
    """Reads one SSE response into ``events`` (dicts with event/id/data); ``done`` is set when it ends."""

    status: int | None = None
    headers: dict = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def types(self) -> list[str]:
        return [e.get("event", "message") for e in self.events]


async def read_sse(client: httpx.AsyncClient, url: str, sse: SseStream, headers: dict | None = None) -> SseStream:
    try:
        async with client.stream("GET", url, headers=headers or {}, timeout=httpx.Timeout(30, read=30)) as response:
            sse.status = response.status_code
            sse.headers = dict(response.headers)
            current: dict = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in current:
                        sse.events.append(current)
                    current = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                current[name] = current[name] + "\n" + value if name == "data" and name in current else value
    finally:
        sse.done.set()
    return sse


def open_sse(client: httpx.AsyncClient, url: str, headers: dict | None = None) -> tuple[SseStream, asyncio.Task]:
    sse = SseStream()
    return sse, asyncio.create_task(read_sse(client, url, sse, headers))


async def sse_clients(gw: Gateway, client: httpx.AsyncClient) -> float:
    return (await gw.metrics(client))["hermes_gateway_sse_clients"][0].value


async def live_views(gw: Gateway, client: httpx.AsyncClient) -> float:
    return (await gw.metrics(client))["hermes_gateway_live_views"][0].value


async def _count_is(gateway: Gateway, client: httpx.AsyncClient, expected: int) -> bool:
    return await sse_clients(gateway, client) == expected


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details", "retry_after", "user_action"}
    assert body["error"]["message"]
    assert set(body["meta"]) == {"timestamp", "request_id", "processing_time_ms"}
    assert body["meta"]["request_id"] == response.headers["x-request-id"]
    return body


# --------------------------------------------------------------------------- submit


async def test_submit_publishes_exactly_one_submit_idea(gateway: Gateway, http, js_client) -> None:
    _, js = js_client
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await http.post(
        f"{gateway.url}/api/submit",
        json={
            "idea": "  plan a vegetable garden on my balcony \n",
            "channel": "web",
            "user_id": "ana",
            "max_questions": 3,
        },
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01", "X-Request-ID": "req-submit-1"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "success"
    assert body["meta"]["request_id"] == "req-submit-1" == response.headers["x-request-id"]
    assert body["meta"]["processing_time_ms"] >= 0
    thread_id = body["data"]["thread_id"]
    assert body["data"]["status_url"] == f"/api/threads/{thread_id}/status"
    assert body["data"]["events_url"] == f"/api/threads/{thread_id}/events"

    commands = await read_commands(js)  # no orchestrator here: the command stays in the work queue
    assert len(commands) == 1
    command, headers = commands[0]
    assert isinstance(command, SubmitIdea)
    assert command.thread_id == thread_id
    assert command.idea == "plan a vegetable garden on my balcony"
    assert (command.channel, command.user_id, command.max_questions) == ("web", "ana", 3)
    assert command.correlation_id == "req-submit-1"
    assert command.command_id == body["data"]["command_id"] == headers["Nats-Msg-Id"]
    # The SERVER span continued the caller's trace and EventStore.send carried it onto the bus.
    assert headers["traceparent"].split("-")[1] == trace_id

    def submit_lines() -> list[dict]:  # written once the response is sent: maybe just after we read it
        return [
            r
            for r in gateway.log_records()
            if r.get("event") == "http_request" and r.get("request_id") == "req-submit-1"
        ]

    [line] = await wait_until(submit_lines)
    assert (line["thread_id"], line["status"], line["route"]) == (thread_id, 202, "/api/submit")
    assert line["trace_id"] == trace_id


async def test_submit_defaults_and_the_length_limit_is_inclusive(gateway: Gateway, http, js_client) -> None:
    _, js = js_client
    response = await http.post(f"{gateway.url}/api/submit", json={"idea": "x" * MAX_INPUT})
    assert response.status_code == 202, response.text
    [(command, _)] = await read_commands(js)
    assert (command.channel, command.user_id, command.max_questions) == ("api", "local", None)
    assert (command.project, command.private, command.priority) == ("default", False, 5)
    assert len(command.idea) == MAX_INPUT
    assert response.json()["meta"]["request_id"] == command.correlation_id


BAD_SUBMISSIONS = [
    ({"json": {"idea": ""}}, 400, "empty_idea"),
    ({"json": {"idea": "   \n\t  "}}, 400, "empty_idea"),
    ({"json": {"idea": "x" * (MAX_INPUT + 1)}}, 413, "idea_too_long"),
    ({"content": b'{"idea": "unterminated', "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
    ({"content": b"", "headers": {"content-type": "application/json"}}, 422, "validation_failed"),
    ({"json": {"idea": 42}}, 422, "validation_failed"),
    ({"json": {"idea": None}}, 422, "validation_failed"),
    ({"json": {"idea": ["a"]}}, 422, "validation_failed"),
    ({"json": {}}, 422, "validation_failed"),
    ({"json": ["plan a garden"]}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "max_questions": "3"}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "max_questions": 11}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "max_questions": -1}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "channel": "not a channel"}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "priority": 11}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "priority": 0}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "priority": "5"}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "private": "yes"}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "project": ""}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "project": "my project"}}, 422, "validation_failed"),
    ({"json": {"idea": "ok", "project": "p" * 65}}, 422, "validation_failed"),
    (
        {"content": b"idea=plan", "headers": {"content-type": "application/x-www-form-urlencoded"}},
        415,
        "unsupported_media_type",
    ),
]


async def test_bad_submissions_get_their_error_and_publish_nothing(gateway: Gateway, http, js_client) -> None:
    _, js = js_client
    for kwargs, status, code in BAD_SUBMISSIONS:
        response = await http.post(f"{gateway.url}/api/submit", **kwargs)
        assert_error(response, status, code)
    assert await commands_published(js) == 0

    body = assert_error(
        await http.post(f"{gateway.url}/api/submit", json={"idea": "x" * (MAX_INPUT + 5)}), 413, "idea_too_long"
    )
    assert body["error"]["details"] == {"length": MAX_INPUT + 5, "max_length": MAX_INPUT}
    assert body["error"]["user_action"]
    details = assert_error(await http.post(f"{gateway.url}/api/submit", json={"idea": 42}), 422, "validation_failed")[
        "error"
    ]["details"]
    assert details[0]["loc"] == ["body", "idea"]

    assert_error(await http.get(f"{gateway.url}/api/no-such-route"), 404, "not_found")
    assert_error(await http.delete(f"{gateway.url}/api/submit"), 405, "method_not_allowed")
    # JSON may escape a lone surrogate, which no UTF-8 message can carry: a 400, not a 500.
    assert_error(
        await http.post(
            f"{gateway.url}/api/submit",
            content=b'{"idea": "plan \\ud800 a garden"}',
            headers={"Content-Type": "application/json"},
        ),
        400,
        "invalid_text",
    )
    assert (await http.get(f"{gateway.url}/api/system/health")).status_code in (200, 503)  # still serving
    assert await commands_published(js) == 0


async def test_max_input_length_is_configurable(bus_env, tmp_path, http, js_client) -> None:
    _, js = js_client
    gw = await start_gateway(bus_env, tmp_path / "logs", HERMES_MAX_INPUT_LENGTH="20")
    try:
        assert_error(await http.post(f"{gw.url}/api/submit", json={"idea": "y" * 21}), 413, "idea_too_long")
        assert await commands_published(js) == 0
        assert (await http.post(f"{gw.url}/api/submit", json={"idea": "y" * 20})).status_code == 202
        assert await commands_published(js) == 1
    finally:
        gw.process.stop()


async def test_project_private_and_priority_reach_the_thread_and_its_jobs(stack: Stack, http, js_client) -> None:
    _, js = js_client
    fields = {"project": "Garden_2", "private": True, "priority": 10}
    thread_id, job = await drafting_thread(stack, http, **fields)
    opened_seq, opened = await stack.peers.last(thread_id, "thread_opened")
    assert (opened.project, opened.private, opened.priority) == ("Garden_2", True, 10)
    assert (job.project, job.private, job.priority) == ("Garden_2", True, 10)
    view = await settled_status(stack, http, thread_id, opened_seq)
    assert {key: view[key] for key in fields} == fields
    plain_id, plain_job = await drafting_thread(stack, http, "no options")
    assert (plain_job.project, plain_job.private, plain_job.priority) == ("default", False, 5)
    assert_error(
        await http.post(f"{stack.url}/api/submit", json={"idea": "ok", "priority": 11}), 422, "validation_failed"
    )


# --------------------------------------------------------------------------- threads


async def test_status_job_and_thread_list_come_from_the_orchestrator(stack: Stack, http, js_client) -> None:
    nc, _ = js_client
    queries = await query_tap(nc)
    thread_id, questions = await awaiting_thread(stack, http)
    proposed_seq, _ = await stack.peers.last(thread_id, "questions_proposed")

    response = await http.get(f"{stack.url}/api/threads/{thread_id}/status", params={"min_sequence": proposed_seq})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "success"
    view = response.json()["data"]
    reply = await ask_orchestrator(nc, thread_id)
    assert reply.found and view == json.loads(msgspec.json.encode(reply.thread))  # passed through as is
    assert (view["thread_id"], view["status"], view["draft1"]) == (thread_id, "awaiting_answers", "Draft one.")
    assert [(q["question_id"], q["category"], q["text"], q["suggestions"]) for q in view["questions"]] == [
        (q.question_id, q.category, q.text, q.suggestions) for q in questions
    ]
    [job] = view["jobs"]
    assert (job["kind"], job["status"], job["backend"], job["model"]) == ("draft1", "completed", "talos", "smollm2")
    assert ThreadQuery(thread_id=thread_id, min_sequence=proposed_seq) in queries.messages()

    assert_error(await http.get(f"{stack.url}/api/threads/t-unknown/status"), 404, "thread_not_found")
    assert_error(await http.get(f"{stack.url}/api/threads/t.*/status"), 400, "invalid_id")
    assert_error(
        await http.get(f"{stack.url}/api/threads/{thread_id}/status", params={"min_sequence": -1}),
        422,
        "validation_failed",
    )

    result = await http.get(f"{stack.url}/api/threads/{thread_id}/jobs/{job['job_id']}/result")
    assert result.status_code == 200, result.text
    data = result.json()["data"]
    assert (data["job_id"], data["thread_id"], data["status"]) == (job["job_id"], thread_id, "completed")
    assert (data["backend"], data["prompt_tokens"], data["completion_tokens"], data["latency_ms"]) == (
        "talos",
        12,
        34,
        120.5,
    )
    assert data["text"] == "Draft one."
    assert_error(await http.get(f"{stack.url}/api/threads/{thread_id}/jobs/job-9/result"), 404, "job_not_found")
    # The job exists, but not in that thread.
    assert_error(await http.get(f"{stack.url}/api/threads/t-unknown/jobs/{job['job_id']}/result"), 404, "job_not_found")

    other = await completed_thread(stack, http)
    listing = await http.get(f"{stack.url}/api/threads", params={"limit": 1})
    assert listing.status_code == 200
    assert listing.json()["data"]["count"] == 1
    assert [t["thread_id"] for t in listing.json()["data"]["threads"]] == [other]  # newest first
    assert ThreadListQuery(limit=1) in queries.messages()
    listing = await http.get(f"{stack.url}/api/threads")
    threads = {t["thread_id"]: t["status"] for t in listing.json()["data"]["threads"]}
    assert threads == {thread_id: "awaiting_answers", other: "completed"}
    flags = {t["thread_id"]: (t["answerable"], t["ratable"], t["open"]) for t in listing.json()["data"]["threads"]}
    assert flags == {thread_id: (True, False, True), other: (False, True, False)}

    # ?status= filters the newest 200 (one query of 200, whatever the limit), then keeps at most limit.
    waiting = await http.get(f"{stack.url}/api/threads", params={"status": "awaiting_answers", "limit": 5})
    assert [t["thread_id"] for t in waiting.json()["data"]["threads"]] == [thread_id]
    assert ThreadListQuery(limit=200) in queries.messages()
    body = assert_error(await http.get(f"{stack.url}/api/threads", params={"status": "done"}), 422, "validation_failed")
    assert "awaiting_answers" in body["error"]["details"][0]["message"]


async def test_reads_answer_503_when_no_orchestrator_answers(gateway: Gateway, http) -> None:
    body = assert_error(await http.get(f"{gateway.url}/api/threads/t-1/status"), 503, "bus_unavailable")
    assert body["error"]["retry_after"] > 0
    assert_error(await http.get(f"{gateway.url}/api/threads"), 503, "bus_unavailable")
    assert_error(
        await http.post(f"{gateway.url}/api/threads/t-1/continue", json={"answers": {"q": "a"}}), 503, "bus_unavailable"
    )


ALICE, BOB = "alice:user:tok-alice-0123", "bob:user:tok-bob-0123"


async def test_a_submitted_thread_answers_as_accepted_until_the_orchestrator_shows_it(
    bus_env, tmp_path, http, js_client
) -> None:
    """A 202 means the command waits durably in JetStream. While no orchestrator answers (down, restarting) or
    it does not know the thread yet, the gateway that accepted it answers it as ``accepted`` (200, not 503 or
    404), takes no answers or ratings for it and shows it to its owner only; once the orchestrator opened it,
    the orchestrator's view."""
    nc, _ = js_client
    gw = await start_gateway(
        bus_env, tmp_path / "logs", HERMES_API_TOKENS=f"{ALICE},{BOB}", HERMES_QUERY_TIMEOUT_SECONDS="1"
    )
    alice = {"Authorization": f"Bearer {ALICE.split(':', 2)[2]}"}
    bob = {"Authorization": f"Bearer {BOB.split(':', 2)[2]}"}
    orchestrator = None
    try:
        submitted = await http.post(
            f"{gw.url}/api/submit",
            headers=alice,
            json={"idea": "plan a balcony garden", "project": "garden", "priority": 7},
        )
        assert submitted.status_code == 202, submitted.text
        thread_id = submitted.json()["data"]["thread_id"]
        status_url = f"{gw.url}/api/threads/{thread_id}/status"

        response = await http.get(status_url, headers=alice)  # no orchestrator answers at all
        assert response.status_code == 200, response.text
        view = response.json()["data"]
        assert (view["thread_id"], view["status"], view["idea"], view["user_id"]) == (
            thread_id,
            "accepted",
            "plan a balcony garden",
            "alice",
        )
        assert (view["project"], view["priority"], view["kind"], view["jobs"]) == ("garden", 7, "idea", [])
        assert (view["answerable"], view["ratable"], view["open"]) == (False, False, True)
        assert_error(await http.get(status_url, headers=bob), 404, "thread_not_found")  # not bob's
        assert_error(
            await http.get(f"{gw.url}/api/threads/{new_id()}/status", headers=alice), 503, "bus_unavailable"
        )  # a thread this gateway never accepted: nothing to say for it
        refused = assert_error(
            await http.post(f"{gw.url}/api/threads/{thread_id}/continue", headers=alice, json={"answers": {"q": "a"}}),
            409,
            "not_awaiting_answers",
        )
        assert refused["error"]["details"]["status"] == "accepted"
        assert_error(
            await http.post(f"{gw.url}/api/threads/{thread_id}/rate", headers=alice, json={"rating": 4}),
            409,
            "not_completed",
        )
        cli = await asyncio.create_subprocess_exec(  # `hermes status` says the same
            sys.executable,
            "-m",
            "hermes_cli",
            "status",
            thread_id,
            "--url",
            gw.url,
            "--token",
            ALICE.split(":", 2)[2],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(cli.communicate(), timeout=30)
        assert cli.returncode == 0, err
        assert out.decode().startswith(f"Thread {thread_id}: accepted\n"), out

        async def not_yet(msg) -> None:  # an orchestrator that has not applied the command yet answers so
            await msg.respond(b'{"found": false}')

        sub = await nc.subscribe(subjects.QUERY_THREAD, cb=not_yet)
        await nc.flush()
        try:
            response = await http.get(status_url, headers=alice)
            assert response.status_code == 200 and response.json()["data"]["status"] == "accepted"
        finally:
            await sub.unsubscribe()
        metrics = await gw.metrics(http)
        views = {
            s.labels["reason"]: s.value for s in metrics["hermes_gateway_accepted_views"] if s.name.endswith("_total")
        }
        assert views == {"unanswered": 4, "not_opened_yet": 1}, views  # status, continue, rate, `hermes status`
        assert [s.value for s in metrics["hermes_gateway_accepted_threads"]] == [1]

        orchestrator = await start_orchestrator(bus_env, nc, tmp_path / "logs")

        async def opened() -> dict | None:
            data = (await http.get(status_url, headers=alice)).json()["data"]
            return data if data["status"] != "accepted" else None

        view = await wait_until(opened, timeout_s=20, interval_s=0.2)
        assert view["status"] == "drafting" and view["jobs"][0]["kind"] == "draft1"
        assert [s.value for s in (await gw.metrics(http))["hermes_gateway_accepted_threads"]] == [0]
    finally:
        if orchestrator is not None:
            await orchestrator.stop()
        gw.process.stop()


async def test_a_reply_outside_the_contract_is_a_502(gateway: Gateway, http, js_client) -> None:
    """Anything on the bus can answer a query subject; the gateway must not trust what it gets. This rogue
    responder is no stand-in for the orchestrator: it injects the failure (no Hermes service replies so)."""
    nc, _ = js_client

    async def garbage(msg) -> None:
        await msg.respond(b'{"found": "maybe"}')

    sub = await nc.subscribe(subjects.QUERY_THREAD, cb=garbage)
    await nc.flush()
    try:
        assert_error(await http.get(f"{gateway.url}/api/threads/t-1/status"), 502, "bad_reply")
    finally:
        await sub.unsubscribe()


async def test_unexpected_errors_use_the_error_envelope() -> None:
    """In process: a route that raises must still answer the envelope (500 ``internal_error``)."""
    from hermes_gateway.bootstrap import create_app
    from hermes_gateway.config import GatewaySettings

    app = create_app(GatewaySettings())

    @app.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.get("/api/boom", headers={"X-Request-ID": "req-boom"})
    assert response.status_code == 500
    body = response.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == "internal_error"
    assert "kaboom" not in response.text  # internals stay in the log
    assert body["meta"]["request_id"] == "req-boom"


def bad_answers(ask: str, drafting: str, done: str, missing: str, q: str) -> list[tuple[str, dict, int, str]]:
    """``(thread id, request kwargs, status, code)``; ``q`` is a question of ``ask``."""
    return [
        (missing, {"json": {"answers": [{"question_id": q, "text": "food"}]}}, 404, "thread_not_found"),
        (drafting, {"json": {"answers": [{"question_id": q, "text": "food"}]}}, 409, "not_awaiting_answers"),
        (done, {"json": {"answers": {q: "food"}}}, 409, "not_awaiting_answers"),
        (ask, {"json": {"answers": [{"question_id": "q-nope", "text": "food"}]}}, 400, "unknown_question"),
        (ask, {"json": {"answers": {q: "food", "q-nope": "x"}}}, 400, "unknown_question"),
        (ask, {"json": {"answers": [{"question_id": q, "text": "  "}]}}, 400, "no_answers"),
        (ask, {"json": {"answers": []}}, 400, "no_answers"),
        (
            ask,
            {"json": {"answers": [{"question_id": q, "text": "a"}, {"question_id": q, "text": "b"}]}},
            400,
            "duplicate_question",
        ),
        (ask, {"json": {"answers": {q: "z" * (MAX_INPUT + 1)}}}, 413, "answer_too_long"),
        (ask, {"json": {"answers": "vegetables"}}, 422, "validation_failed"),
        (ask, {"json": {"answers": [{"question_id": q, "text": 3}]}}, 422, "validation_failed"),
        (ask, {"json": {}}, 422, "validation_failed"),
        (ask, {"content": b'{"answers": [', "headers": {"content-type": "application/json"}}, 400, "invalid_json"),
        ("t.>", {"json": {"answers": {q: "food"}}}, 400, "invalid_id"),
    ]


async def test_bad_answers_get_their_error_and_publish_nothing(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    ask, questions = await awaiting_thread(stack, http)
    drafting, _ = await drafting_thread(stack, http, "summarise my notes")
    done = await completed_thread(stack, http)
    commands = await command_tap(nc)
    before = await commands_published(js)
    for thread_id, kwargs, status, code in bad_answers(ask, drafting, done, new_id(), questions[0].question_id):
        response = await http.post(f"{stack.url}/api/threads/{thread_id}/continue", **kwargs)
        assert_error(response, status, code)
    assert await commands_published(js) == before
    assert commands.seen == []
    # The orchestrator saw nothing either: the thread still waits, unanswered.
    view = (await http.get(f"{stack.url}/api/threads/{ask}/status")).json()["data"]
    assert view["status"] == "awaiting_answers"
    assert [q["answer"] for q in view["questions"]] == [None, None]
    assert "answers_recorded" not in [e.type_name() for _, e in await thread_log(js, ask)]


async def test_answers_publish_answer_questions_without_the_empty_ones(stack: Stack, http, js_client) -> None:
    nc, js = js_client
    listed, (intent, scope) = await awaiting_thread(stack, http)
    mapped, (intent2, scope2) = await awaiting_thread(stack, http, "grow herbs on a windowsill")
    commands = await command_tap(nc)
    response = await http.post(
        f"{stack.url}/api/threads/{listed}/continue",
        json={
            "answers": [
                {"question_id": intent.question_id, "text": "  vegetables "},
                {"question_id": scope.question_id, "text": ""},
            ]
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["answered"] == [intent.question_id]
    response = await http.post(
        f"{stack.url}/api/threads/{mapped}/continue",
        json={"answers": {scope2.question_id: "two square metres", intent2.question_id: ""}},
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["answered"] == [scope2.question_id]

    await wait_until(lambda: len(commands.seen) == 2)
    assert [type(c) for c in commands.messages()] == [AnswerQuestions, AnswerQuestions]
    (first, first_headers), (second, _) = commands.seen
    assert (first.thread_id, second.thread_id) == (listed, mapped)
    assert [(a.question_id, a.text) for a in first.answers] == [(intent.question_id, "vegetables")]
    assert [(a.question_id, a.text) for a in second.answers] == [(scope2.question_id, "two square metres")]
    assert first_headers["Nats-Msg-Id"] == first.command_id != second.command_id

    # The orchestrator recorded exactly those answers and asked for draft 2 with them.
    for thread_id, question, text in ((listed, intent, "vegetables"), (mapped, scope2, "two square metres")):
        draft2 = await stack.peers.job(thread_id, "draft2")
        assert f"{question.text} {text}" in draft2.messages[-1].content
        seq, recorded = await stack.peers.last(thread_id, "answers_recorded")
        assert [(a.question_id, a.text) for a in recorded.answers] == [(question.question_id, text)]
        view = await settled_status(stack, http, thread_id, seq)
        assert view["status"] == "refining"
        assert {q["question_id"]: q["answer"] for q in view["questions"]}[question.question_id] == text


async def test_rating_a_completed_thread_is_recorded_and_bad_ratings_publish_nothing(
    stack: Stack, http, js_client
) -> None:
    nc, js = js_client
    done = await completed_thread(stack, http)
    drafting, _ = await drafting_thread(stack, http, "summarise my notes")
    commands = await command_tap(nc)
    before = await commands_published(js)
    bad = [
        (done, {"json": {"rating": 0}}, 422, "validation_failed"),
        (done, {"json": {"rating": 6}}, 422, "validation_failed"),
        (done, {"json": {"rating": "5"}}, 422, "validation_failed"),
        (done, {"json": {"rating": 4.5}}, 422, "validation_failed"),
        (done, {"json": {}}, 422, "validation_failed"),
        (drafting, {"json": {"rating": 4}}, 409, "not_completed"),
        (new_id(), {"json": {"rating": 4}}, 404, "thread_not_found"),
    ]
    for thread_id, kwargs, status, code in bad:
        assert_error(await http.post(f"{stack.url}/api/threads/{thread_id}/rate", **kwargs), status, code)
    assert await commands_published(js) == before and commands.seen == []

    response = await http.post(f"{stack.url}/api/threads/{done}/rate", json={"rating": 2})
    assert response.status_code == 202, response.text
    assert response.json()["data"]["rating"] == 2
    await stack.peers.last(done, "thread_rated")
    response = await http.post(f"{stack.url}/api/threads/{done}/rate", json={"rating": 5, "comment": " spot on "})
    assert response.status_code == 202, response.text
    seq, rated = await stack.peers.last(done, "thread_rated", lambda e: e.rating == 5)
    assert (rated.draft_number, rated.comment) == (1, "spot on")
    view = await settled_status(stack, http, done, seq)
    assert (view["rating"], view["rating_comment"]) == (5, "spot on")


# --------------------------------------------------------------------------- SSE


async def test_sse_replays_the_log_then_streams_live_events_and_tokens(stack: Stack, http, js_client) -> None:
    _, js = js_client
    peers = stack.peers
    thread_id, job = await drafting_thread(stack, http, max_questions=0)
    other, _ = await drafting_thread(stack, http, "not mine")
    opened_seq, _ = await peers.last(thread_id, "thread_opened")
    queued_seq, _ = await peers.last(thread_id, "job_queued")

    sse, task = open_sse(http, f"{stack.url}/api/threads/{thread_id}/events")
    await wait_until(lambda: len(sse.events) >= 2)
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.types() == ["thread_opened", "job_queued"]
    assert [int(e["id"]) for e in sse.events] == [opened_seq, queued_seq]
    opened = json.loads(sse.events[0]["data"])  # what the orchestrator made of the gateway's SubmitIdea
    assert (opened["idea"], opened["channel"], opened["user_id"], opened["max_questions"]) == (
        "plan a balcony garden",
        "api",
        "local",
        0,
    )
    assert await sse_clients(stack.gateway, http) == 1

    await peers.tokens(job, ["Grow ", "tomatoes", "."])
    await wait_until(lambda: len(sse.events) >= 5)
    selected = await peers.select(job)
    completed = await peers.complete(job, "Grow tomatoes.", prompt_tokens=10, completion_tokens=3, latency_ms=250.0)
    await asyncio.wait_for(task, timeout=15)  # the server closed the stream after thread_completed
    assert sse.types() == [
        "thread_opened",
        "job_queued",
        "token",
        "token",
        "token",
        "backend_selected",
        "execution_completed",
        "draft_presented",
        "thread_completed",
    ]
    tokens = [json.loads(e["data"]) for e in sse.events if e["event"] == "token"]
    assert tokens == [
        {"job_id": job.job_id, "seq": 0, "text": "Grow ", "done": False},
        {"job_id": job.job_id, "seq": 1, "text": "tomatoes", "done": False},
        {"job_id": job.job_id, "seq": 2, "text": ".", "done": True},
    ]
    assert all("id" not in e for e in sse.events if e["event"] == "token")
    # Every log event is the one at that sequence: ours, then the orchestrator's draft 1 and completion.
    log = await thread_log(js, thread_id)
    assert [(int(e["id"]), e["event"]) for e in sse.events if e["event"] != "token"] == [
        (seq, event.type_name()) for seq, event in log
    ]
    assert [int(e["id"]) for e in sse.events[5:7]] == [selected, completed]
    assert [json.loads(e["data"])["aggregate_id"] for e in sse.events if e["event"] != "token"] == [thread_id] * 6
    assert json.loads(sse.events[-2]["data"])["text"] == "Grow tomatoes."
    assert json.loads(sse.events[-1]["data"])["reason"] == "no_questions"
    assert other not in json.dumps(sse.events)
    await wait_until(lambda: _count_is(stack.gateway, http, 0))


async def test_sse_resumes_after_last_event_id(stack: Stack, http, js_client) -> None:
    _, js = js_client
    peers = stack.peers
    thread_id, job = await drafting_thread(stack, http, "resume me")
    await peers.complete(job, "d1")
    draft_seq, draft = await peers.draft(thread_id)
    story = [seq for seq, _ in await thread_log(js, thread_id)]
    assert len(story) == 4 and story[-1] == draft_seq  # opened, queued, execution completed, draft 1
    sse, task = open_sse(http, f"{stack.url}/api/threads/{thread_id}/events", headers={"Last-Event-ID": str(story[0])})
    await wait_until(lambda: len(sse.events) >= 3)
    await asyncio.sleep(0.3)  # nothing older than Last-Event-ID may follow
    assert [int(e["id"]) for e in sse.events] == story[1:]
    proposed, _ = await peers.propose(draft, [])  # nothing to ask: the orchestrator completes the thread
    done, _ = await peers.last(thread_id, "thread_completed")
    await asyncio.wait_for(task, timeout=15)
    assert [int(e["id"]) for e in sse.events] == [*story[1:], proposed, done]

    # A browser reconnecting after the end gets 204, which stops EventSource from retrying.
    after_end = await http.get(f"{stack.url}/api/threads/{thread_id}/events", headers={"Last-Event-ID": str(done)})
    assert after_end.status_code == 204
    # Without Last-Event-ID the whole story replays and the stream ends by itself.
    sse, task = open_sse(http, f"{stack.url}/api/threads/{thread_id}/events")
    await asyncio.wait_for(task, timeout=15)
    assert [int(e["id"]) for e in sse.events] == [*story, proposed, done]
    assert_error(
        await http.get(f"{stack.url}/api/threads/{thread_id}/events", headers={"Last-Event-ID": "not-a-number"}),
        400,
        "invalid_last_event_id",
    )
    assert_error(await http.get(f"{stack.url}/api/threads/a.*/events"), 400, "invalid_id")


async def test_sse_client_leaving_releases_its_view(gateway: Gateway, js_client) -> None:
    """Watchers share the gateway's one event consumer (none of their own); one that leaves is released."""
    _, js = js_client
    thread_id = new_id()

    async def consumers() -> int:
        return (await js.stream_info(subjects.EVENTS_STREAM)).state.consumer_count

    assert await consumers() == 1  # the gateway's event feed
    async with httpx.AsyncClient(timeout=20) as watcher:
        streams = [open_sse(watcher, f"{gateway.url}/api/threads/{t}/events") for t in (thread_id, thread_id, new_id())]
        async with httpx.AsyncClient() as probe:
            await wait_until(lambda: _count_is(gateway, probe, 3))
            assert await live_views(gateway, probe) == 3
            assert await consumers() == 1
            for _, task in streams:
                task.cancel()
            await asyncio.gather(*(task for _, task in streams), return_exceptions=True)
            await wait_until(lambda: _count_is(gateway, probe, 0), timeout_s=10)
            assert await live_views(gateway, probe) == 0
    assert await consumers() == 1


# --------------------------------------------------------------------------- health, metrics, UI, lifecycle


async def test_health_is_ok_with_the_orchestrator_and_degraded_without(
    gateway: Gateway, http, js_client, bus_env, tmp_path
) -> None:
    nc, js = js_client
    thread_id = await submit(gateway, http, "count me")  # waits in the command queue for now
    degraded = assert_error(await http.get(f"{gateway.url}/api/system/health"), 503, "degraded")
    report = degraded["error"]["details"]
    assert report["status"] == "degraded"
    assert report["nats"]["connected"] is True
    assert report["orchestrator"]["answering"] is False
    assert report["streams"]["HERMES_COMMANDS"]["messages"] == 1
    assert report["streams"]["HERMES_EVENTS"]["messages"] == 0

    orchestrator = await start_orchestrator(bus_env, nc, tmp_path / "logs")
    queries = await query_tap(nc)  # only now: a tap is interest, which turns "no responders" into a wait
    try:
        await Peers(js, nc).job(thread_id)  # it consumed the waiting command: opened the thread, queued draft 1
        response = await http.get(f"{gateway.url}/api/system/health")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "success"
        data = body["data"]
        assert data["status"] == "ok"
        assert data["orchestrator"]["answering"] is True and data["orchestrator"]["latency_ms"] >= 0
        assert set(data["streams"]) == {"HERMES_EVENTS", "HERMES_COMMANDS", "HERMES_EXEC", "HERMES_DLQ", "HERMES_INBOX"}
        events = (await js.stream_info(subjects.EVENTS_STREAM)).state
        assert data["streams"]["HERMES_EVENTS"] == {"messages": 2, "last_seq": 2, "consumers": events.consumer_count}
        assert events.consumer_count >= 1  # the orchestrator follows the log
        assert data["streams"]["HERMES_COMMANDS"]["last_seq"] == 1
        # The ping is a thread query on the wire, for an id no thread has.
        [ping] = await wait_until(lambda: queries.messages(ThreadQuery))
        assert ping.thread_id.startswith("health-") and ping.min_sequence == 0
    finally:
        await queries.sub.unsubscribe()
        await orchestrator.stop()
    report = assert_error(await http.get(f"{gateway.url}/api/system/health"), 503, "degraded")["error"]["details"]
    assert report["orchestrator"]["answering"] is False


async def test_gateway_rides_out_a_nats_restart(gateway: Gateway, http, nats_server, js_client) -> None:
    nats_server.stop()
    body = assert_error(
        await http.post(f"{gateway.url}/api/submit", json={"idea": "while NATS is down"}), 503, "bus_unavailable"
    )
    assert body["error"]["retry_after"]
    nats_server.start()

    async def published() -> bool:
        response = await http.post(f"{gateway.url}/api/submit", json={"idea": "after the restart"})
        return response.status_code == 202

    await wait_until(published, timeout_s=30, interval_s=0.5)


async def test_metrics_expose_the_gateway_series(gateway: Gateway, http, js_client, bus_env, tmp_path) -> None:
    nc, js = js_client
    thread_id = await submit(gateway, http, "count this", max_questions=0)
    assert (await http.post(f"{gateway.url}/api/submit", json={"idea": ""})).status_code == 400
    await http.get(f"{gateway.url}/api/threads/some-thread/status")  # no orchestrator yet: 503
    await http.get(f"{gateway.url}/api/threads/other-thread/status")
    orchestrator = await start_orchestrator(bus_env, nc, tmp_path / "logs")
    try:
        peers = Peers(js, nc)
        await peers.complete(await peers.job(thread_id), "Counted.")
        await peers.last(thread_id, "thread_completed")
        sse, task = open_sse(http, f"{gateway.url}/api/threads/{thread_id}/events")
        await asyncio.wait_for(task, timeout=15)
        assert sse.types()[-1] == "thread_completed"
    finally:
        await orchestrator.stop(wait=False)

    async def stream_counted() -> dict | None:  # the client may see the end before the server counts it
        families = await gateway.metrics(http)
        return (
            families
            if any(
                s.labels.get("route") == "/api/threads/{thread_id}/events"
                for s in families["hermes_gateway_http_requests"]
            )
            else None
        )

    families = await wait_until(stream_counted)
    requests = {
        (s.labels["route"], s.labels["method"], s.labels["status"]): s.value
        for s in families["hermes_gateway_http_requests"]
        if s.name.endswith("_total")
    }
    assert requests[("/api/submit", "POST", "202")] == 1
    assert requests[("/api/submit", "POST", "400")] == 1
    assert requests[("/api/threads/{thread_id}/status", "GET", "503")] == 2  # the template, not the raw paths
    assert requests[("/api/threads/{thread_id}/events", "GET", "200")] == 1
    assert not any("some-thread" in route for route, _, _ in requests)
    durations = {
        (s.labels["route"], s.labels["method"]): s.value
        for s in families["hermes_gateway_http_request_duration_seconds"]
        if s.name.endswith("_count")
    }
    assert durations[("/api/submit", "POST")] == 2
    published = {
        s.labels["type"]: s.value for s in families["hermes_gateway_commands_published"] if s.name.endswith("_total")
    }
    assert published == {"submit_idea": 1}
    assert families["hermes_gateway_sse_clients"][0].value == 0


async def test_web_ui_is_served_and_talks_to_the_api(gateway: Gateway, http) -> None:
    page = await http.get(f"{gateway.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js"' in page.text
    assert '<link rel="stylesheet" href="/static/style.css"' in page.text
    script = await http.get(f"{gateway.url}/static/app.js")
    assert script.status_code == 200
    for reference in (
        "/api/submit",
        "/continue",
        "/events",
        "/status",
        "EventSource",
        "draft_presented",
        "questions_proposed",
        "backend_selected",
        "execution_completed",
        "#thread=",
        "/rate",
        "e.assumptions",
        "/api/learn/feedback",
        "corrections",
        "/api/learn/preferences?user_id=local",
        '"PATCH"',
        '"DELETE"',
        "#preferences",
    ):
        assert reference in script.text, reference
    # Every element the script looks up by id exists on the page.
    looked_up = set(re.findall(r'\$\("([\w-]+)"\)', script.text))
    on_page = set(re.findall(r'id="([\w-]+)"', page.text))
    assert looked_up and looked_up <= on_page, sorted(looked_up - on_page)
    assert 'href="#preferences"' in page.text and 'id="assumptions-box"' in page.text
    assert ".innerHTML" not in script.text  # model and user text only ever goes in as textContent
    style = await http.get(f"{gateway.url}/static/style.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_stops_cleanly_on_signals_even_with_a_stream_open(bus_env, tmp_path, http, sig) -> None:
    gw = await start_gateway(bus_env, tmp_path / "logs")
    sse, task = open_sse(http, f"{gw.url}/api/threads/{new_id()}/events")
    await wait_until(lambda: sse.status == 200)
    code = await asyncio.to_thread(gw.process.stop, sig, 15.0)
    assert code == 0, gw.process.log_text()
    await asyncio.wait_for(task, timeout=5)  # raises if the stream was cut rather than ended
    assert any(r.get("event") == "gateway_stopped" for r in gw.log_records())
    assert "Traceback" not in gw.process.log_text()
    assert "without completing response" not in gw.process.log_text()

"""Message handlers of the orchestrator: commands, reactions to events, answer timers and queries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.base import Command, Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.commands import AnswerQuestions, CloseAnswerWindow, RateThread, SubmitIdea
from hermes_proto.events import (
    AnswersRecorded,
    DraftPresented,
    ExecutionCompleted,
    ExecutionAbandoned,
    QuestionsProposed,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.queries import (
    QUERY_THREADS,
    JobQuery,
    JobReply,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
)
from hermes_proto.telemetry import bind_ids

from hermes_orchestrator import domain, readmodel
from hermes_orchestrator.projection import Projection

log = structlog.get_logger("hermes.orchestrator")

COMMANDS = Counter("hermes_orchestrator_commands_total", "Commands handled", ["type", "outcome"])
REACTIONS = Counter("hermes_orchestrator_reactions_total", "Events appended in reaction to events", ["type"])
QUESTIONS_ANSWERED = Counter("hermes_orchestrator_questions_answered_total", "Clarifying questions answered")
JOB_SECONDS = Histogram(
    "hermes_orchestrator_job_duration_seconds",
    "Completed jobs: queue (queued to execution start, by difference), execution (the edge's model call) "
    "and end_to_end (queued to result in the log)",
    ["kind", "phase"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)


class Orchestrator:
    """The process manager of threads: decides on commands and reacts to events using the read model,
    appends the resulting events, and arms answer-window timers."""

    def __init__(self, nc: NATS, js: JetStreamContext, engine: Engine, projection: Projection,
                 limits: domain.Limits) -> None:
        self.nc = nc
        self.engine = engine
        self.projection = projection
        self.limits = limits
        self.store = EventStore(js, "orchestrator")
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def _state(self, thread_id: str) -> domain.ThreadState | None:
        with Session(self.engine) as session:
            return readmodel.load_state(session, thread_id)

    # ---- commands ----------------------------------------------------------------------------

    async def on_command(self, delivery: Delivery[Command]) -> None:
        cmd = delivery.message
        thread_id = getattr(cmd, "thread_id", None)
        bind_ids(thread_id=thread_id, correlation_id=cmd.correlation_id)
        await self.projection.catch_up()
        state = await asyncio.to_thread(self._state, thread_id) if thread_id else None
        now = utcnow()
        match cmd:
            case SubmitIdea():
                events = domain.decide_submit(state, cmd, self.limits, now)
            case AnswerQuestions():
                events = domain.decide_answers(state, cmd, self.limits, now)
            case RateThread():
                events = domain.decide_rate(state, cmd, now)
            case CloseAnswerWindow():
                events = domain.decide_close_window(state, cmd, now)
            case _:
                events = []
        if events:
            await self.store.append(events)
            QUESTIONS_ANSWERED.inc(sum(len(e.answers) for e in events if isinstance(e, AnswersRecorded)))
        outcome = "applied" if events else "ignored"
        COMMANDS.labels(cmd.type_name(), outcome).inc()
        log.info("command_handled", type=cmd.type_name(), outcome=outcome, events=[e.type_name() for e in events])

    # ---- reactions ---------------------------------------------------------------------------

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id,
                 job_id=getattr(event, "job_id", None))
        await self.projection.require(delivery.stream_sequence)
        state = await asyncio.to_thread(self._state, event.aggregate_id)
        now = utcnow()
        match event:
            case ExecutionCompleted():
                events = domain.react_execution_completed(state, event, now)
            case ExecutionAbandoned():
                events = domain.react_execution_abandoned(state, event, now)
            case QuestionsProposed():
                events = domain.react_questions_proposed(state, event, now)
            case DraftPresented(draft_number=1) if state is not None and state.status == domain.AWAITING_ANSWERS:
                timeout = self._answer_timeout(event.aggregate_id)
                self.arm_timer(event.aggregate_id, event.occurred_at.timestamp() + timeout, event.correlation_id)
                events = []
            case _:
                events = []
        if events:
            await self.store.append(events)
            for e in events:
                REACTIONS.labels(e.type_name()).inc()
            if isinstance(event, ExecutionCompleted):
                await asyncio.to_thread(self._observe_job, event)
            log.info("reacted", cause=event.type_name(), events=[e.type_name() for e in events])

    def _observe_job(self, done: ExecutionCompleted) -> None:
        """Job latency from the log's own timestamps: end_to_end = result appended - job queued (s);
        execution = the edge's measured ``latency_ms``; queue = the difference (never below 0)."""
        with Session(self.engine) as session:
            job = session.get(readmodel.JobRow, done.job_id)
            if job is None:
                return
            end_to_end = (done.occurred_at - job.queued_at.replace(tzinfo=job.queued_at.tzinfo or UTC)).total_seconds()
        execution = done.latency_ms / 1000
        JOB_SECONDS.labels(job.kind, "end_to_end").observe(max(end_to_end, 0.0))
        JOB_SECONDS.labels(job.kind, "execution").observe(execution)
        JOB_SECONDS.labels(job.kind, "queue").observe(max(end_to_end - execution, 0.0))

    def _answer_timeout(self, thread_id: str) -> float:
        with Session(self.engine) as session:
            row = session.get(readmodel.ThreadRow, thread_id)
            return row.answer_timeout_s if row else self.limits.answer_timeout_s

    # ---- answer windows ----------------------------------------------------------------------

    def arm_timer(self, thread_id: str, deadline_epoch_s: float, correlation_id: str | None) -> None:
        """Send ``CloseAnswerWindow`` for ``thread_id`` at ``deadline_epoch_s`` (Unix seconds)."""
        if thread_id in self._timers:
            return
        delay = max(0.0, deadline_epoch_s - datetime.now(UTC).timestamp())
        loop = asyncio.get_running_loop()
        self._timers[thread_id] = loop.call_later(
            delay, lambda: asyncio.ensure_future(self._close_window(thread_id, correlation_id)))

    async def _close_window(self, thread_id: str, correlation_id: str | None) -> None:
        self._timers.pop(thread_id, None)
        cmd = CloseAnswerWindow(command_id=derived_id(thread_id, "close_answer_window"), issued_at=utcnow(),
                                thread_id=thread_id, correlation_id=correlation_id)
        try:
            await self.store.send(cmd)
        except Exception as exc:  # retried: the window stays open until the command is accepted
            log.warning("close_window_failed", thread_id=thread_id, error=repr(exc))
            self.arm_timer(thread_id, datetime.now(UTC).timestamp() + 1.0, correlation_id)

    async def arm_pending_timers(self) -> None:
        """After start-up catch-up: re-arm the windows of every thread still awaiting answers."""
        with Session(self.engine) as session:
            pending = readmodel.awaiting_deadlines(session)
        for thread_id, deadline in pending:
            self.arm_timer(thread_id, (deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)).timestamp(), None)
        log.info("answer_timers_armed", count=len(pending))

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class QueryResponder:
    """Answers ``hermes.query.*`` request/reply from the read models (msgspec JSON)."""

    def __init__(self, nc: NATS, engine: Engine, projection: Projection) -> None:
        self.nc = nc
        self.engine = engine
        self.projection = projection

    async def subscribe(self) -> None:
        await self.nc.subscribe(subjects.QUERY_THREAD, queue="orchestrator", cb=self._thread)
        await self.nc.subscribe(subjects.QUERY_JOB, queue="orchestrator", cb=self._job)
        await self.nc.subscribe(QUERY_THREADS, queue="orchestrator", cb=self._threads)
        await self.nc.subscribe(subjects.QUERY_HEALTH, queue="orchestrator", cb=self._health)

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        with Session(self.engine) as session:
            return fn(session, *args)

    async def _respond(self, msg: Msg, reply: object) -> None:
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    async def _thread(self, msg: Msg) -> None:
        try:
            query = msgspec.json.decode(msg.data, type=ThreadQuery)
        except msgspec.MsgspecError as exc:
            await self._respond(msg, {"error": "bad_query", "detail": str(exc)})
            return
        if query.min_sequence:
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        view = await asyncio.to_thread(self._read, readmodel.thread_view, query.thread_id)
        await self._respond(msg, ThreadReply(found=view is not None, thread=view))

    async def _job(self, msg: Msg) -> None:
        try:
            query = msgspec.json.decode(msg.data, type=JobQuery)
        except msgspec.MsgspecError as exc:
            await self._respond(msg, {"error": "bad_query", "detail": str(exc)})
            return

        def read(session: Session):  # noqa: ANN202
            job = session.get(readmodel.JobRow, query.job_id)
            return readmodel.job_view(job) if job is not None and job.thread_id == query.thread_id else None

        view = await asyncio.to_thread(self._read, read)
        await self._respond(msg, JobReply(found=view is not None, job=view))

    async def _threads(self, msg: Msg) -> None:
        try:
            query = msgspec.json.decode(msg.data or b"{}", type=ThreadListQuery)
        except msgspec.MsgspecError as exc:
            await self._respond(msg, {"error": "bad_query", "detail": str(exc)})
            return
        views = await asyncio.to_thread(self._read, readmodel.recent_threads, max(1, min(query.limit, 500)))
        await self._respond(msg, ThreadListReply(threads=views))

    async def _health(self, msg: Msg) -> None:
        await self._respond(msg, {"service": "orchestrator", "status": "ok", "position": self.projection.position})

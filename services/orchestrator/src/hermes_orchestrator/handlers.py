"""Message handlers of the orchestrator: commands, reactions to events, answer timers and queries."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from datetime import UTC, datetime

import msgspec
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.base import Command, Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.codec import UNDECODABLE
from hermes_proto.commands import (
    AnswerQuestions,
    CancelJob,
    CloseAnswerWindow,
    ExpireWorkflow,
    RateThread,
    RequestClassification,
    SubmitChat,
    SubmitIdea,
    SubmitWorkflow,
)
from hermes_proto.events import (
    AnswersRecorded,
    Assumption,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobCancelled,
    JobQueued,
    QuestionsProposed,
    SettingChanged,
    ThreadCompleted,
    ThreadFailed,
    WorkflowPlanned,
)
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.queries import (
    QUERY_THREADS,
    ErrorReply,
    JobQuery,
    JobReply,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
)
from hermes_proto.sessions import (
    ExportQuery,
    MemoryQuery,
    MemoryReply,
    SessionQuery,
    SessionReply,
    SessionsQuery,
    SessionsReply,
    SoulReply,
    SoulRequest,
)
from hermes_proto.telemetry import bind_ids
from hermes_proto.userconfig import BY_KEY as USER_SETTINGS_BY_KEY
from hermes_proto.userconfig import USER_SETTINGS, ChangeSetting, ConfigReply, SettingView

from hermes_orchestrator import domain, readmodel, sessions
from hermes_orchestrator.projection import Projection
from hermes_orchestrator.soul import SoulFile

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
QUEUE_DEPTH = Gauge("hermes_queue_depth", "Open jobs (queued, dispatched, running, retrying) by priority, "
                    "from the read model", ["priority"])
QUEUE_WAITING_STEPS = Gauge("hermes_queue_waiting_steps", "Workflow steps waiting for their dependencies")
JOBS_CANCELLED = Counter("hermes_orchestrator_jobs_cancelled_total", "Jobs cancelled, by reason", ["reason"])
SETTINGS_CHANGED = Counter("hermes_orchestrator_settings_changed_total", "Editable settings changed by users",
                           ["key"])
CHAT_TURNS = Counter("hermes_orchestrator_chat_turns_total", "Chat turns queued (SubmitChat), by channel", ["channel"])
MEMORIES_RECALLED = Histogram("hermes_orchestrator_memories_recalled", "Memories given to one new prompt",
                              buckets=(0, 1, 2, 3, 5, 10, 20))
CANCEL_REASONS = ("user", "timeout", "workflow_timeout")  # CancelJob.reason is free text: others count as "other"
for _reason in CANCEL_REASONS:  # exported at 0 from the start
    JOBS_CANCELLED.labels(_reason)


class Orchestrator:
    """The process manager of threads: decides on commands and reacts to events using the read model,
    appends the resulting events, and arms answer-window timers."""

    def __init__(self, nc: NATS, js: JetStreamContext, engine: Engine, projection: Projection,
                 limits: domain.Limits, soul: SoulFile | None = None) -> None:
        self.nc = nc
        self.soul = soul
        self.engine = engine
        self.projection = projection
        self.base_limits = limits
        self._limits_at: tuple[int, domain.Limits] | None = None
        self.store = EventStore(js, "orchestrator")
        self._timers: dict[str, asyncio.TimerHandle] = {}
        """Armed timers by key (``answer:<thread>``, ``job:<job>``, ``workflow:<thread>``)."""
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        """One decision lock per thread being decided on (see :meth:`_decision`)."""

    @property
    def limits(self) -> domain.Limits:
        """The deployment's limits with the users' editable settings (``SettingChanged``) applied; read again only
        after the projection applied a ``SettingChanged`` (a setting changes only by that event)."""
        version = self.projection.settings_version
        if self._limits_at is None or self._limits_at[0] != version:
            with Session(self.engine) as session:
                self._limits_at = (version, domain.with_user_settings(self.base_limits,
                                                                      readmodel.user_settings(session)))
        return self._limits_at[1]

    def settings_view(self) -> list[SettingView]:
        """Every editable setting with its value in force and the deployment's."""
        with Session(self.engine) as session:
            values = readmodel.user_settings(session)
        limits = domain.with_user_settings(self.base_limits, values)
        return [SettingView(key=s.key, env=s.env, value=getattr(limits, domain.LIMIT_OF_SETTING[s.key]),
                            default=getattr(self.base_limits, domain.LIMIT_OF_SETTING[s.key]), unit=s.unit,
                            description=s.description, minimum=s.minimum, maximum=s.maximum,
                            changed=s.key in values, service=s.service)
                for s in USER_SETTINGS]

    async def on_config(self, msg: Msg) -> None:
        """``hermes.query.config`` (empty body: every editable setting) and ``hermes.control.config``
        (:class:`ChangeSetting`: append ``SettingChanged``, answer once projected)."""
        try:
            if msg.subject == subjects.CONTROL_CONFIG:
                change = msgspec.json.decode(msg.data, type=ChangeSetting)
                spec = USER_SETTINGS_BY_KEY.get(change.key)
                if spec is None:
                    reply: object = ErrorReply(code="unknown_setting", message=f"No editable setting {change.key!r}.")
                else:
                    value = None if change.value is None else str(spec.parse(change.value))
                    event = SettingChanged(event_id=new_id(), aggregate_id=change.key.replace(".", "-"),
                                           occurred_at=utcnow(),
                                           correlation_id=new_id(), key=change.key, value=value, by=change.by)
                    await self._append([event])
                    SETTINGS_CHANGED.labels(change.key).inc()
                    log.info("setting_changed", key=change.key, value=value, by=change.by)
                    views = await asyncio.to_thread(self.settings_view)
                    reply = ConfigReply(settings=[v for v in views if v.key == change.key])
            else:
                reply = ConfigReply(settings=await asyncio.to_thread(self.settings_view))
        except UNDECODABLE as exc:
            reply = ErrorReply(code="bad_request", message=str(exc))
        except ValueError as exc:
            reply = ErrorReply(code="bad_request", message=str(exc))
        except Exception as exc:  # a bus or projection failure: say so rather than leave the asker waiting
            log.warning("config_failed", error=repr(exc))
            reply = ErrorReply(code="internal", message=f"The setting could not be changed: {exc!r}")
        if msg.reply:
            await msg.respond(msgspec.json.encode(reply))

    def _state(self, thread_id: str) -> domain.ThreadState | None:
        with Session(self.engine) as session:
            return readmodel.load_state(session, thread_id)

    def _preferences(self, user_id: str, now: datetime) -> list[Assumption]:
        assert self.limits.preference_threshold is not None
        with Session(self.engine) as session:
            return readmodel.usable_preferences(session, user_id, self.limits.preference_threshold, now)

    def _harness(self, user_id: str, about: str, thread_id: str) -> domain.Harness:
        """SOUL.md and the memories of ``user_id`` relevant to ``about`` (outside ``thread_id``) within the budget."""
        soul = self.soul.read() if self.soul is not None else ""
        with Session(self.engine) as session:
            memories = sessions.recall(session, user_id, about, thread_id, self.limits.memory_token_budget,
                                       self.limits.memory_max_items)
        MEMORIES_RECALLED.observe(len(memories))
        return domain.Harness(soul=soul, memories=memories)

    # ---- commands ----------------------------------------------------------------------------

    async def on_command(self, delivery: Delivery[Command]) -> None:
        cmd = delivery.message
        thread_id = getattr(cmd, "thread_id", None)
        bind_ids(thread_id=thread_id, correlation_id=cmd.correlation_id)
        async with self._decision(thread_id or ""):
            await self.projection.catch_up()
            events = await self._decide_command(cmd, thread_id)
            if events:
                await self._append(events)
        if events:
            QUESTIONS_ANSWERED.inc(sum(len(e.answers) for e in events if isinstance(e, AnswersRecorded)))
            for e in events:
                if isinstance(e, JobCancelled):
                    JOBS_CANCELLED.labels(e.reason if e.reason in CANCEL_REASONS else "other").inc()
                    self._disarm(f"job:{e.job_id}")
        outcome = "applied" if events else "ignored"
        COMMANDS.labels(cmd.type_name(), outcome).inc()
        log.info("command_handled", type=cmd.type_name(), outcome=outcome, events=[e.type_name() for e in events])

    def _decision(self, thread_id: str) -> asyncio.Lock:
        """One decision at a time per thread: the commands consumer and the reactor run concurrently, and two
        decisions reading the same state (e.g. an answer window closing as the questions arrive) would both
        end the thread. Held until the decision's events are in the read model."""
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = asyncio.Lock()
        return lock

    async def _append(self, events: list[Event]) -> None:
        """Append, arm the deadlines the events carry, and wait until the read model holds them (so the next
        decision on the thread sees them)."""
        sequences = await self.store.append(events)
        self._arm_deadlines(events)
        for e in events:
            if isinstance(e, ThreadCompleted | ThreadFailed):  # nothing left for its windows to close
                self._disarm(f"answer:{e.aggregate_id}")
                self._disarm(f"workflow:{e.aggregate_id}")
        await self.projection.require(max(sequences))

    async def _decide_command(self, cmd: Command, thread_id: str | None) -> list[Event]:
        state = await asyncio.to_thread(self._state, thread_id) if thread_id else None
        now = utcnow()
        match cmd:
            case SubmitIdea():
                known = (await asyncio.to_thread(self._preferences, cmd.user_id, now)
                         if state is None and self.limits.preference_threshold is not None else [])
                harness = (await asyncio.to_thread(self._harness, cmd.user_id, cmd.idea, cmd.thread_id)
                           if state is None else domain.Harness())
                events = domain.decide_submit(state, cmd, self.limits, now, known, harness)
            case SubmitChat():
                fresh = state is None or cmd.job_id not in state.jobs
                about = next((m.content for m in reversed(cmd.messages) if m.role == "user"), cmd.messages[-1].content)
                harness = (await asyncio.to_thread(self._harness, cmd.user_id, about, cmd.thread_id)
                           if fresh else domain.Harness())
                events = domain.decide_chat(state, cmd, self.limits, now, harness)
                if events:
                    CHAT_TURNS.labels(cmd.channel).inc()
            case AnswerQuestions():
                soul = self.soul.read() if self.soul is not None and state is not None else ""
                events = domain.decide_answers(state, cmd, self.limits, now, domain.Harness(soul=soul))
            case RateThread():
                events = domain.decide_rate(state, cmd, now)
            case CloseAnswerWindow():
                events = domain.decide_close_window(state, cmd, now)
            case SubmitWorkflow():
                events = domain.decide_submit_workflow(state, cmd, self.limits, now)
            case CancelJob():
                events = domain.decide_cancel(state, cmd, now)
            case ExpireWorkflow():
                events = domain.decide_expire_workflow(state, cmd, now)
            case RequestClassification():
                events = domain.decide_classification(state, cmd, self.limits, now)
            case _:
                events = []
        return events

    # ---- reactions ---------------------------------------------------------------------------

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id,
                 job_id=getattr(event, "job_id", None))
        if isinstance(event, (ExecutionCompleted, ExecutionAbandoned)):
            self._disarm(f"job:{event.job_id}")  # the job ended: its timeout has nothing left to do
        async with self._decision(event.aggregate_id):
            await self.projection.require(delivery.stream_sequence)
            events = await self._react(event)
            if events:
                await self._append(events)
        if events:
            for e in events:
                REACTIONS.labels(e.type_name()).inc()
            if isinstance(event, ExecutionCompleted):
                await asyncio.to_thread(self._observe_job, event)
            log.info("reacted", cause=event.type_name(), events=[e.type_name() for e in events])

    async def _react(self, event: Event) -> list[Event]:
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
        return events

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

    # ---- timers: answer windows, job timeouts, workflow timeouts ----------------------------------

    def _schedule(self, key: str, deadline_epoch_s: float, command: Callable[[], Command | None]) -> None:
        """At ``deadline_epoch_s`` (Unix seconds) send the command ``command()`` builds (None: nothing to do).
        A key already armed is left as it is; a send that fails is retried a second later."""
        if key in self._timers:
            return
        delay = max(0.0, deadline_epoch_s - datetime.now(UTC).timestamp())
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, lambda: asyncio.ensure_future(self._fire(key, command)))

    async def _fire(self, key: str, command: Callable[[], Command | None]) -> None:
        self._timers.pop(key, None)
        try:
            cmd = await asyncio.to_thread(command)
            if cmd is not None:
                await self.store.send(cmd)
        except Exception as exc:  # retried: the deadline stays armed until the command is accepted
            log.warning("timer_command_failed", key=key, error=repr(exc))
            self._schedule(key, datetime.now(UTC).timestamp() + 1.0, command)

    def _disarm(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def arm_timer(self, thread_id: str, deadline_epoch_s: float, correlation_id: str | None) -> None:
        """Send ``CloseAnswerWindow`` for ``thread_id`` at ``deadline_epoch_s`` (Unix seconds)."""
        self._schedule(f"answer:{thread_id}", deadline_epoch_s, lambda: CloseAnswerWindow(
            command_id=derived_id(thread_id, "close_answer_window"), issued_at=utcnow(), thread_id=thread_id,
            correlation_id=correlation_id))

    def arm_job_timeout(self, thread_id: str, job_id: str, deadline_epoch_s: float) -> None:
        """Send ``CancelJob(reason="timeout")`` for ``job_id`` at its deadline, if it is still open then."""
        def command() -> Command | None:
            with Session(self.engine) as session:
                if not readmodel.job_is_open(session, job_id):
                    return None
            return CancelJob(command_id=derived_id(job_id, "timeout"), issued_at=utcnow(), thread_id=thread_id,
                             job_id=job_id, reason="timeout")
        self._schedule(f"job:{job_id}", deadline_epoch_s, command)

    def arm_workflow_timeout(self, thread_id: str, deadline_epoch_s: float) -> None:
        self._schedule(f"workflow:{thread_id}", deadline_epoch_s, lambda: ExpireWorkflow(
            command_id=derived_id(thread_id, "expire_workflow"), issued_at=utcnow(), thread_id=thread_id))

    def _arm_deadlines(self, events: list[Event]) -> None:
        for e in events:
            if isinstance(e, JobQueued) and e.timeout_s:
                self.arm_job_timeout(e.aggregate_id, e.job_id, e.occurred_at.timestamp() + e.timeout_s)
            elif isinstance(e, WorkflowPlanned) and e.timeout_s:
                self.arm_workflow_timeout(e.aggregate_id, e.occurred_at.timestamp() + e.timeout_s)

    async def arm_pending_timers(self) -> None:
        """After start-up catch-up: re-arm the answer windows of threads awaiting answers, the timeouts of open
        jobs and those of unfinished workflows."""
        def read():  # noqa: ANN202
            with Session(self.engine) as session:
                return (readmodel.awaiting_deadlines(session), readmodel.open_job_deadlines(session),
                        readmodel.workflow_deadlines(session))
        answers, jobs, workflows = await asyncio.to_thread(read)
        for thread_id, deadline in answers:
            self.arm_timer(thread_id, _epoch(deadline), None)
        for thread_id, job_id, deadline in jobs:
            self.arm_job_timeout(thread_id, job_id, _epoch(deadline))
        for thread_id, deadline in workflows:
            self.arm_workflow_timeout(thread_id, _epoch(deadline))
        log.info("timers_armed", answer_windows=len(answers), job_timeouts=len(jobs), workflows=len(workflows))

    def cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def publish_queue_depth(self, stop: asyncio.Event, interval_s: float = 2.0) -> None:
        """Every ``interval_s`` seconds, set ``hermes_queue_depth{priority}`` from the read model."""
        while not stop.is_set():
            try:
                depth = await asyncio.to_thread(self._queue_depth)
                for priority in range(1, 11):
                    QUEUE_DEPTH.labels(str(priority)).set(depth.by_priority.get(str(priority), 0))
                QUEUE_WAITING_STEPS.set(depth.waiting_steps)
            except Exception as exc:  # a metric must never stop the service
                log.warning("queue_depth_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    def _queue_depth(self):  # noqa: ANN202
        with Session(self.engine) as session:
            return readmodel.queue_depth(session)


def _epoch(ts: datetime) -> float:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


class QueryResponder:
    """Answers ``hermes.query.*`` request/reply from the read models (msgspec JSON)."""

    def __init__(self, nc: NATS, engine: Engine, projection: Projection, soul: SoulFile | None = None) -> None:
        self.nc = nc
        self.engine = engine
        self.projection = projection
        self.soul = soul

    async def subscribe(self) -> None:
        await self.nc.subscribe(subjects.QUERY_THREAD, queue="orchestrator", cb=self._thread)
        await self.nc.subscribe(subjects.QUERY_JOB, queue="orchestrator", cb=self._job)
        await self.nc.subscribe(QUERY_THREADS, queue="orchestrator", cb=self._threads)
        await self.nc.subscribe(subjects.QUERY_HEALTH, queue="orchestrator", cb=self._health)
        await self.nc.subscribe(subjects.QUERY_QUEUE, queue="orchestrator", cb=self._queue)
        await self.nc.subscribe(subjects.QUERY_SESSIONS, queue="orchestrator", cb=self._sessions)
        await self.nc.subscribe(subjects.QUERY_SESSION, queue="orchestrator", cb=self._session)
        await self.nc.subscribe(subjects.QUERY_MEMORY, queue="orchestrator", cb=self._memory)
        await self.nc.subscribe(subjects.QUERY_EXPORT, queue="orchestrator", cb=self._export)
        if self.soul is not None:
            await self.nc.subscribe(subjects.CONTROL_SOUL, queue="orchestrator", cb=self._soul)

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        with Session(self.engine) as session:
            return fn(session, *args)

    async def _respond(self, msg: Msg, reply: object) -> None:
        """Answer ``msg``; a reply over the server's max payload is answered ``too_large`` instead (so the asker
        gets an error at once rather than waiting for its timeout)."""
        if not msg.reply:
            return
        data = msgspec.json.encode(reply)
        if len(data) > self.nc.max_payload:
            data = msgspec.json.encode(ErrorReply(code="too_large", message=f"The answer is {len(data)} bytes, over "
                                                  f"the NATS max payload ({self.nc.max_payload} bytes)."))
        await msg.respond(data)

    async def _thread(self, msg: Msg) -> None:
        if (query := await self._decode(msg, ThreadQuery)) is None:
            return
        if query.min_sequence:
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        view = await asyncio.to_thread(self._read, readmodel.thread_view, query.thread_id)
        await self._respond(msg, ThreadReply(found=view is not None, thread=view))

    async def _job(self, msg: Msg) -> None:
        if (query := await self._decode(msg, JobQuery)) is None:
            return

        def read(session: Session):  # noqa: ANN202
            job = session.get(readmodel.JobRow, query.job_id)
            return readmodel.job_view(job) if job is not None and job.thread_id == query.thread_id else None

        view = await asyncio.to_thread(self._read, read)
        await self._respond(msg, JobReply(found=view is not None, job=view))

    async def _threads(self, msg: Msg) -> None:
        if (query := await self._decode(msg, ThreadListQuery)) is None:
            return
        views = await asyncio.to_thread(self._read, readmodel.recent_threads, max(1, min(query.limit, 500)),
                                        query.origin, query.user_id)
        await self._respond(msg, ThreadListReply(threads=views))

    async def _decode(self, msg: Msg, query_type: type):  # noqa: ANN202
        """The query, or None after answering ``bad_request``."""
        try:
            return msgspec.json.decode(msg.data or b"{}", type=query_type)
        except UNDECODABLE as exc:
            await self._respond(msg, ErrorReply(code="bad_request", message=str(exc)))
            return None

    async def _sessions(self, msg: Msg) -> None:
        if (query := await self._decode(msg, SessionsQuery)) is None:
            return
        views = await asyncio.to_thread(self._read, sessions.recent_sessions, query.user_id, query.channel,
                                        query.limit)
        await self._respond(msg, SessionsReply(sessions=views))

    async def _session(self, msg: Msg) -> None:
        if (query := await self._decode(msg, SessionQuery)) is None:
            return
        if query.min_sequence:
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        view = await asyncio.to_thread(self._read, sessions.session_view, query.session_id, query.last_turns)
        await self._respond(msg, SessionReply(found=view is not None, session=sessions.fit(view, self._budget())))

    async def _memory(self, msg: Msg) -> None:
        if (query := await self._decode(msg, MemoryQuery)) is None:
            return
        if query.min_sequence:
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        hits = await asyncio.to_thread(self._read, sessions.search_memory, query.q, query.user_id, query.limit)
        await self._respond(msg, MemoryReply(hits=hits))

    async def _export(self, msg: Msg) -> None:
        if (query := await self._decode(msg, ExportQuery)) is None:
            return
        try:
            page = await asyncio.to_thread(self._read, sessions.export_page, query, self._budget())
        except ValueError as exc:
            await self._respond(msg, ErrorReply(code="bad_request", message=str(exc)))
            return
        await self._respond(msg, page)

    def _budget(self) -> int:
        """Bytes a reply may take: half the server's max payload, leaving room for the envelope and headers."""
        return self.nc.max_payload // 2

    async def _soul(self, msg: Msg) -> None:
        if (request := await self._decode(msg, SoulRequest)) is None:
            return
        assert self.soul is not None
        try:
            text = (await asyncio.to_thread(self.soul.write, request.text) if request.text is not None
                    else await asyncio.to_thread(self.soul.read))
        except OSError as exc:
            await self._respond(msg, ErrorReply(code="internal", message=f"SOUL.md: {exc.strerror or exc}"))
            return
        await self._respond(msg, SoulReply(text=text, path=str(self.soul.path)))

    async def _queue(self, msg: Msg) -> None:
        reply = await asyncio.to_thread(self._read, readmodel.queue_depth)
        await self._respond(msg, reply)

    async def _health(self, msg: Msg) -> None:
        await self._respond(msg, {"service": "orchestrator", "status": "ok", "position": self.projection.position})

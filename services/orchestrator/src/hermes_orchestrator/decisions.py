"""Runs the orchestrator's handlers one thread at a time: the commands consumer and the reactor hand each message
here; the thread's decision lock is held from reading its state until the decision's events are folded, so the next
decision on the thread sees them and two causes arriving together (an answer window closing as the questions
arrive) cannot both end it."""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime

import structlog
from prometheus_client import Counter, Histogram

from hermes_proto.base import Command, Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import AnswersRecorded, ExecutionAbandoned, ExecutionCompleted, JobCancelled
from hermes_proto.forgetting import ForgetUser
from hermes_proto.ids import utcnow
from hermes_proto.partitions import SINGLE, Partition
from hermes_proto.project_memory import MEMORY_COMMANDS
from hermes_proto.projection import Projection
from hermes_proto.schedules import SCHEDULE_COMMANDS
from hermes_proto.skill_proposals import PROPOSAL_COMMANDS
from hermes_proto.subjects import command_subject
from hermes_proto.telemetry import bind_ids

from hermes_orchestrator.forgetting import Forgetting
from hermes_orchestrator.handlers import COMMAND_HANDLERS, EVENT_HANDLERS, NEW_THREAD_COMMANDS, Deps
from hermes_orchestrator.historian import MemoryHandlers
from hermes_orchestrator.proposals import ProposalHandlers
from hermes_orchestrator.schedule_handlers import ScheduleHandlers
from hermes_orchestrator.schedule_runtime import REACTION_EVENTS as SCHEDULE_REACTIONS
from hermes_orchestrator.state import ThreadState

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
JOBS_CANCELLED = Counter("hermes_orchestrator_jobs_cancelled_total", "Jobs cancelled, by reason", ["reason"])
CANCEL_REASONS = ("user", "timeout", "workflow_timeout")  # CancelJob.reason is free text: others count as "other"
for _reason in CANCEL_REASONS:  # exported at 0 from the start
    JOBS_CANCELLED.labels(_reason)


class Decisions:
    """``on_command`` / ``on_event``: the consumers' handlers. ``projection`` gives the fold's position
    (read-your-writes), ``store`` appends."""

    def __init__(self, deps: Deps, store: EventStore, projection: Projection, partition: Partition = SINGLE) -> None:
        self.deps = deps
        self.store = store
        self.projection = projection
        self.partition = partition
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.proposals: ProposalHandlers | None = None
        """Partition 0's skill proposal handlers."""
        self.memory: MemoryHandlers | None = None
        """Partition 0's project memory handlers (the historian, edits and deletes)."""
        self.schedules: ScheduleHandlers | None = None
        """Partition 0's schedule handlers (None on the other partitions: their commands never reach them)."""
        self.forgetting: Forgetting | None = None
        """Partition 0's forgetting (``ForgetUser``, retention)."""

    def _lock(self, thread_id: str) -> asyncio.Lock:
        lock = self._locks.get(thread_id)
        if lock is None:
            lock = self._locks[thread_id] = asyncio.Lock()
        return lock

    async def _append(self, events: list[Event]) -> None:
        """Append, arm the deadlines the events carry, and wait until the fold holds them."""
        sequences = await self.store.append(events)
        self.deps.timers.follow(events)
        await self.projection.require_folded(max(sequences))

    async def on_command(self, delivery: Delivery[Command]) -> None:
        cmd = delivery.message
        if isinstance(cmd, ForgetUser):
            if self.forgetting is not None:
                await self.forgetting.on_command(cmd)
            else:
                log.warning("forget_command_elsewhere", partition=self.partition.index)
            return
        if isinstance(cmd, PROPOSAL_COMMANDS):
            if self.proposals is not None:
                await self.proposals.on_command(cmd)
            else:
                log.warning("proposal_command_elsewhere", type=cmd.type_name(), partition=self.partition.index)
            return
        if isinstance(cmd, MEMORY_COMMANDS):
            if self.memory is not None:
                await self.memory.on_command(cmd)
            else:
                log.warning("memory_command_elsewhere", type=cmd.type_name(), partition=self.partition.index)
            return
        if isinstance(cmd, SCHEDULE_COMMANDS):
            if self.schedules is not None:
                await self.schedules.on_command(cmd)
            else:
                log.warning("schedule_command_elsewhere", type=cmd.type_name(), partition=self.partition.index)
            return
        thread_id = getattr(cmd, "thread_id", None) or ""
        bind_ids(thread_id=thread_id or None, correlation_id=cmd.correlation_id)
        if not self.partition.single and not self.partition.owns(thread_id) and await self._forward(cmd, delivery):
            return
        handler = COMMAND_HANDLERS.get(type(cmd))
        events: list[Event] = []
        async with self._lock(thread_id):
            if handler is not None:
                if not isinstance(cmd, NEW_THREAD_COMMANDS):  # it may depend on other services' events
                    await self.projection.catch_up_folded()
                state = await self.deps.fold.state(thread_id) if thread_id else None
                events = await handler(cmd, state, self.deps, utcnow())
                if events:
                    await self._append(events)
        for e in events:
            if isinstance(e, AnswersRecorded):
                QUESTIONS_ANSWERED.inc(len(e.answers))
            elif isinstance(e, JobCancelled):
                JOBS_CANCELLED.labels(e.reason if e.reason in CANCEL_REASONS else "other").inc()
                self.deps.timers.disarm(f"job:{e.job_id}")
        outcome = "applied" if events else "ignored"
        COMMANDS.labels(cmd.type_name(), outcome).inc()
        log.info("command_handled", type=cmd.type_name(), outcome=outcome, events=[e.type_name() for e in events])

    async def _forward(self, cmd: Command, delivery: Delivery[Command]) -> bool:
        """Another partition's command that came without its thread token (``hermes.cmd.<type>``, partition 0's): publish
        it again on its thread's subject, which the server maps to the owning partition; True when forwarded. A
        command whose thread id cannot be a subject token, or one the server already mapped here (a server whose
        mapping disagrees with :func:`hermes_proto.partitions.partition_of`), is decided here (logged)."""
        target = command_subject(cmd)
        if delivery.subject.count(".") != 2 or target.count(".") != 3:
            log.warning(
                "command_not_partitioned",
                type=cmd.type_name(),
                subject=delivery.subject,
                partition=self.partition.index,
            )
            return False
        await self.store.forward(cmd, target, f"fwd-{cmd.command_id}")
        COMMANDS.labels(cmd.type_name(), "forwarded").inc()
        log.info("command_forwarded", type=cmd.type_name(), subject=target)
        return True

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        if self.schedules is not None and isinstance(event, SCHEDULE_REACTIONS):
            await self.schedules.on_event(delivery)
        if not self.partition.owns(event.aggregate_id):  # another partition's thread: its replica reacts
            return
        bind_ids(
            thread_id=event.aggregate_id, correlation_id=event.correlation_id, job_id=getattr(event, "job_id", None)
        )
        if isinstance(event, ExecutionCompleted | ExecutionAbandoned):
            self.deps.timers.disarm(f"job:{event.job_id}")  # the job ended: its timeout has nothing left to do
        handler = EVENT_HANDLERS.get(type(event))
        if handler is None:
            return
        async with self._lock(event.aggregate_id):
            await self.projection.require_folded(delivery.stream_sequence)
            # An ended thread no longer in memory reacts to nothing: it is not read back.
            state = self.deps.fold.states.get(event.aggregate_id)
            events = await handler(event, state, self.deps, utcnow())
            if events:
                await self._append(events)
        if events:
            for e in events:
                REACTIONS.labels(e.type_name()).inc()
            if isinstance(event, ExecutionCompleted) and state is not None:
                observe_job(state, event)
            log.info("reacted", cause=event.type_name(), events=[e.type_name() for e in events])


def observe_job(state: ThreadState, done: ExecutionCompleted) -> None:
    """Job latency from the log's own timestamps: end_to_end = result appended - job queued (s); execution = the
    edge's measured ``latency_ms``; queue = the difference (never below 0)."""
    job = state.jobs.get(done.job_id)
    if job is None or job.queued_at is None:
        return
    end_to_end = (done.occurred_at - _aware(job.queued_at)).total_seconds()
    execution = done.latency_ms / 1000
    JOB_SECONDS.labels(job.kind, "end_to_end").observe(max(end_to_end, 0.0))
    JOB_SECONDS.labels(job.kind, "execution").observe(execution)
    JOB_SECONDS.labels(job.kind, "queue").observe(max(end_to_end - execution, 0.0))


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)

"""The schedules' part of :class:`hermes_orchestrator.decisions.Decisions`: each schedule command decided under the
schedule's lock (``schedule:<id>``, the same key as its command lane) with :mod:`schedule_decide`, appended, folded,
then the schedule's timer armed again; and the reactions that start a fired run and report a run's end."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

import structlog
from prometheus_client import Counter

from hermes_proto import schedules as sc
from hermes_proto.base import Command, Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import ThreadCompleted, ThreadFailed
from hermes_proto.ids import utcnow
from hermes_proto.projection import Projection
from hermes_proto.telemetry import bind_ids

from hermes_orchestrator import schedule_decide, schedule_runtime
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.schedule_runtime import ScheduleClock
from hermes_orchestrator.schedule_triggers import git_head

log = structlog.get_logger("hermes.orchestrator")

SCHEDULE_COMMANDS = Counter(
    "hermes_schedule_commands_total",
    "Schedule commands by type and outcome (applied, ignored, refused)",
    ["type", "outcome"],
)


class ScheduleHandlers:
    """``on_command`` for :data:`hermes_proto.schedules.SCHEDULE_COMMANDS`, ``on_event`` for
    :data:`schedule_runtime.REACTION_EVENTS`. ``lock`` and ``append`` are the orchestrator's (append waits until
    the fold holds the events)."""

    def __init__(
        self,
        fold: ThreadFold,
        store: EventStore,
        projection: Projection,
        clock: ScheduleClock,
        lock: Callable[[str], AbstractAsyncContextManager],
        append: Callable[[list[Event]], Awaitable[None]],
        grace_s: float,
    ) -> None:
        self.fold, self.store, self.projection, self.clock = fold, store, projection, clock
        self._lock, self._append, self.grace_s = lock, append, grace_s

    async def on_command(self, cmd: Command) -> None:
        schedule_id: str = cmd.schedule_id  # type: ignore[attr-defined]
        bind_ids(correlation_id=cmd.correlation_id, schedule_id=schedule_id)
        async with self._lock(f"schedule:{schedule_id}"):
            if not isinstance(cmd, sc.CreateSchedule):
                await self.projection.catch_up_folded()
            state = self.fold.schedules.get(schedule_id)
            now = utcnow()
            refused: str | None = None
            if isinstance(cmd, sc.FireSchedule):
                events = schedule_decide.fire(cmd, state, now, self.grace_s)
            elif isinstance(cmd, sc.CloseScheduleRun):
                events = schedule_decide.close_run(cmd, state, now)
            else:
                refused = schedule_decide.refusal(cmd, state, now)
                baseline = await self._baseline(cmd) if refused is None else ""
                events = schedule_decide.manage(cmd, state, now, baseline)
            if events:
                await self._append(events)
                schedule_runtime.observe(events, self.fold.schedules)
            self.clock.arm(schedule_id)
        outcome = "applied" if events else ("refused" if refused else "ignored")
        SCHEDULE_COMMANDS.labels(cmd.type_name(), outcome).inc()
        log.info(
            "schedule_command_handled",
            type=cmd.type_name(),
            outcome=outcome,
            refused=refused,
            events=[e.type_name() for e in events],
        )

    @staticmethod
    async def _baseline(cmd: Command) -> str:
        """A git trigger's current ``HEAD`` (so only later commits fire); empty for anything else."""
        definition = getattr(cmd, "definition", None)
        if definition is None or definition.when.kind != "git" or not definition.when.path:
            return ""
        return await asyncio.to_thread(git_head, definition.when.path) or ""

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        if isinstance(event, sc.ScheduleFired):
            await self.projection.require_folded(delivery.stream_sequence)
            state = self.fold.schedules.get(event.aggregate_id)
            if state is None:
                return
            command = schedule_runtime.run_command(event, state)
            await self.store.send(command)
            log.info("schedule_run_started", schedule_id=event.aggregate_id, run_id=event.run_id, reason=event.reason)
        elif isinstance(event, ThreadCompleted | ThreadFailed):
            schedule_id = self.fold.schedule_runs.get(event.aggregate_id)
            if schedule_id is None:
                await self.projection.require_folded(delivery.stream_sequence)
                schedule_id = self.fold.schedule_runs.get(event.aggregate_id)
            if schedule_id is not None:
                await self.store.send(schedule_runtime.close_command(event, schedule_id))

"""What turns the schedules' decisions into runs: the due timers, the run each firing starts, the end of a run
reported back, and the metrics. Partition 0 of the orchestrator runs all of it (a schedule's commands carry no
thread, so they are partition 0's).

Timers: after every decision on a schedule (and at start-up for all) :meth:`ScheduleClock.arm` computes the next
due time after the last handled one; one already older than the grace is sent at once as a ``catch_up`` firing that
counts every due time missed since (:func:`hermes_proto.schedules.dues_between`). The timer only sends
``FireSchedule`` (command id derived from schedule and due key, so JetStream drops a copy sent twice within its
duplicate window); the decision checks the state again, which makes the firing exactly-once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from prometheus_client import Counter, Gauge, Histogram

from hermes_proto import schedules as sc
from hermes_proto.agents import StartAgentRun
from hermes_proto.base import Command, Event
from hermes_proto.commands import SubmitIdea, SubmitWorkflow
from hermes_proto.events import ThreadCompleted, ThreadFailed
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.tools import untrusted

from hermes_orchestrator.schedule_state import ScheduleState
from hermes_orchestrator.timers import Timers

log = structlog.get_logger("hermes.orchestrator")

SCHEDULE_RUNS = Counter(
    "hermes_schedule_runs_total",
    "Scheduled firings by outcome: fired, completed, failed, missed, skipped, queued",
    ["outcome"],
)
for _outcome in ("fired", "completed", "failed", "missed", "skipped", "queued"):
    SCHEDULE_RUNS.labels(_outcome)
SCHEDULE_LATENESS = Histogram(
    "hermes_schedule_lateness_seconds",
    "Seconds from a firing's due time (or its trigger's arrival) to the run's start",
    ["reason"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)
SCHEDULE_MISSED = Counter("hermes_schedule_missed_total", "Due times missed while Hermes was down")
SCHEDULES = Gauge("hermes_schedules", "Schedules by status (active, paused)", ["status"])
FAILURES_IN_ROW = Gauge(
    "hermes_schedule_failures_in_row",
    "Runs failed or due times missed since the schedule's last completed run",
    ["schedule_id"],
)
REACTION_EVENTS: tuple[type[Event], ...] = (sc.ScheduleFired, ThreadCompleted, ThreadFailed)
"""The events partition 0 reacts to for the schedules (besides the orchestrator's own reactions)."""


def observe(events: list[Event], states: dict[str, ScheduleState]) -> None:
    """Count appended schedule events and refresh the gauges."""
    for e in events:
        if isinstance(e, sc.ScheduleFired):
            SCHEDULE_RUNS.labels("fired").inc()
            SCHEDULE_LATENESS.labels(e.reason).observe(e.lateness_ms / 1000)
        elif isinstance(e, sc.ScheduleMissed):
            SCHEDULE_RUNS.labels("missed").inc()
            SCHEDULE_MISSED.inc(e.count)
        elif isinstance(e, sc.ScheduleSkipped):
            SCHEDULE_RUNS.labels("skipped").inc()
        elif isinstance(e, sc.ScheduleQueued):
            SCHEDULE_RUNS.labels("queued").inc()
        elif isinstance(e, sc.ScheduleRunCompleted):
            SCHEDULE_RUNS.labels("completed").inc()
        elif isinstance(e, sc.ScheduleRunFailed):
            SCHEDULE_RUNS.labels("failed").inc()
    refresh_gauges(states, {e.aggregate_id for e in events})


def refresh_gauges(states: dict[str, ScheduleState], changed: set[str] | None = None) -> None:
    counts = {"active": 0, "paused": 0}
    for state in states.values():
        if state.status in counts:
            counts[state.status] += 1
    for status, n in counts.items():
        SCHEDULES.labels(status).set(n)
    for schedule_id in changed if changed is not None else states:
        state = states.get(schedule_id)
        if state is None or state.status == "deleted":
            try:
                FAILURES_IN_ROW.remove(schedule_id)
            except KeyError:
                pass
        else:
            FAILURES_IN_ROW.labels(schedule_id).set(state.failures_in_row)


class ScheduleClock:
    """Arms one timer per timed schedule (key ``schedule:<id>``) on the orchestrator's :class:`Timers`."""

    def __init__(self, timers: Timers, states: dict[str, ScheduleState], grace_s: float) -> None:
        self.timers, self.states, self.grace_s = timers, states, grace_s

    def arm(self, schedule_id: str, now: datetime | None = None) -> None:
        """Arm the timer of ``schedule_id`` at its next due time (at once when that is past)."""
        key = f"schedule:{schedule_id}"
        self.timers.disarm(key)
        state = self.states.get(schedule_id)
        if state is None or state.status != "active" or not state.timed():
            return
        due = sc.next_due(state.definition.when, state.last_due_at or state.active_since)
        if due is not None:
            self.timers.schedule(key, max(due, now or utcnow()), lambda: self.command(schedule_id))

    def command(self, schedule_id: str, now: datetime | None = None) -> sc.FireSchedule | None:
        """The firing due now, decided when the timer goes off: the next due time, or, when that is older than
        the grace (the process was down or stopped), one ``catch_up`` firing for the latest due time that counts
        every one missed since."""
        state = self.states.get(schedule_id)
        if state is None or state.status != "active" or not state.timed():
            return None
        now = now or utcnow()
        since = state.last_due_at or state.active_since
        due = sc.next_due(state.definition.when, since)
        if due is None:
            return None
        if due < now - timedelta(seconds=self.grace_s):
            dues = sc.dues_between(state.definition.when, since, now)
            if dues is not None:
                return self._fire(state, dues.last, "catch_up", dues.count, dues.first)
        return self._fire(state, due, "due", 0, None)

    def arm_all(self) -> None:
        now = utcnow()
        for schedule_id in list(self.states):
            self.arm(schedule_id, now)
        refresh_gauges(self.states)
        log.info("schedules_armed", schedules=len(self.states))

    @staticmethod
    def _fire(state: ScheduleState, due: datetime, reason: str, missed: int, first: datetime | None) -> sc.FireSchedule:
        key = sc.due_key(due)
        return sc.FireSchedule(
            command_id=derived_id(state.schedule_id, key, "fire"),
            issued_at=utcnow(),
            schedule_id=state.schedule_id,
            due_key=key,
            due_at=due,
            reason=reason,  # type: ignore[arg-type]
            missed_count=missed,
            first_missed_at=first,
            user_id=state.user_id,
        )


def run_command(fired: sc.ScheduleFired, state: ScheduleState) -> Command:
    """The command that opens the run of ``fired`` (thread ``fired.run_id``; id derived from the event, so a
    redelivered reaction sends the same command). The delivery decides the channel and reply address: Telegram
    (``origin.telegram_chat_id``), a webhook (``callback_url``), the web UI's inbox or the log (channel
    ``schedule``). A trigger's payload joins the text as untrusted data. An idea asks clarifying questions only
    when delivered to Telegram (elsewhere nobody is there to answer: draft 1 is the result)."""
    d = state.definition
    action, deliver = d.action, d.deliver
    channel = "telegram" if deliver.to == "telegram" else "schedule"
    origin = {"schedule_id": state.schedule_id, "schedule_name": d.name[:120], "delivery": deliver.to}
    if deliver.to == "telegram" and deliver.chat_id:
        origin["telegram_chat_id"] = deliver.chat_id
    url = deliver.url if deliver.to == "webhook" else None
    text = action.text
    if fired.payload or fired.detail:
        event = f"{fired.detail}\n{fired.payload}".strip()
        text = f"{text}\n\n{untrusted(f'schedule:{fired.reason}', event)}"
    common = {
        "command_id": derived_id(fired.event_id, "run"),
        "issued_at": utcnow(),
        "correlation_id": fired.correlation_id,
        "thread_id": fired.run_id,
        "channel": channel,
        "user_id": state.user_id,
        "origin": origin,
        "priority": action.priority,
    }
    if action.kind == "agent":
        return StartAgentRun(**common, task=text, profile=action.profile, project=action.project, callback_url=url)
    if action.kind == "workflow":
        return SubmitWorkflow(
            **common,
            title=d.name,
            steps=list(action.steps),
            project=action.project,
            private=action.private,
            callback_url=url,
        )
    # Nobody waits at the web inbox, a webhook or the log to answer clarifying questions: draft 1 is the result
    # there. In Telegram the user can answer, so the usual questions come.
    questions = None if deliver.to == "telegram" else 0
    return SubmitIdea(
        **common,
        idea=text,
        project=action.project,
        private=action.private,
        callback_url=url,
        source_app="schedule",
        max_questions=questions,
    )


def close_command(ended: ThreadCompleted | ThreadFailed, schedule_id: str) -> sc.CloseScheduleRun:
    """``CloseScheduleRun`` for the end of a scheduled run's thread."""
    return sc.CloseScheduleRun(
        command_id=derived_id(ended.event_id, "close_schedule_run"),
        issued_at=utcnow(),
        correlation_id=ended.correlation_id,
        schedule_id=schedule_id,
        run_id=ended.aggregate_id,
        ended_at=ended.occurred_at.astimezone(UTC),
        error_code=ended.error_code if isinstance(ended, ThreadFailed) else None,
        message=ended.message if isinstance(ended, ThreadFailed) else "",
    )

"""The schedules' decisions: pure functions of a command, the schedule's state (:mod:`schedule_state`) and the time,
returning the events to append (empty: nothing to do, a duplicate or a refusal, which the caller logs).

Exactly once: :func:`fire` appends nothing for a due key the state has handled, so a timer firing twice, a command
redelivered after a crash or a trigger seen again by a restarted watcher start one run. A timed due handled more than
``grace_s`` after its time is missed (:class:`~hermes_proto.schedules.ScheduleMissed`, then a run only under
``run_once``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from hermes_proto import schedules as sc
from hermes_proto.base import Command, Event
from hermes_proto.ids import derived_id

from hermes_orchestrator.schedule_state import ScheduleState

Envelope = Callable[[str], dict]


def envelope(cmd: Command, schedule_id: str, now: datetime) -> Envelope:
    """The envelope fields of the events ``cmd`` causes (ids derived from the command id and the event's name)."""

    def env(name: str) -> dict:
        return {
            "event_id": derived_id(cmd.command_id, name),
            "aggregate_id": schedule_id,
            "occurred_at": now,
            "correlation_id": cmd.correlation_id or cmd.command_id,
            "causation_id": cmd.command_id,
        }

    return env


def refusal(cmd: Command, state: ScheduleState | None, now: datetime) -> str | None:
    """Why ``cmd`` (create, change, pause, resume, delete) cannot apply, or None."""
    if isinstance(cmd, sc.CreateSchedule):
        if state is not None:
            return "schedule_exists"
        return "invalid_definition" if sc.problem(cmd.definition, now) else None
    if state is None or state.status == "deleted":
        return "unknown_schedule"
    if getattr(cmd, "user_id", None) != state.user_id:
        return "not_owner"
    if isinstance(cmd, sc.ChangeSchedule) and sc.problem(cmd.definition, now):
        return "invalid_definition"
    return None


def manage(cmd: Command, state: ScheduleState | None, now: datetime, baseline: str = "") -> list[Event]:
    """Create, change, pause, resume or delete (``baseline``: a git trigger's current ``HEAD``)."""
    if refusal(cmd, state, now) is not None:
        return []
    env = envelope(cmd, cmd.schedule_id, now)
    if isinstance(cmd, sc.CreateSchedule):
        return [
            sc.ScheduleCreated(
                **env("created"),
                user_id=cmd.user_id,
                definition=cmd.definition,
                channel=cmd.channel,
                baseline=baseline,
            )
        ]
    assert state is not None
    if isinstance(cmd, sc.ChangeSchedule):
        return [sc.ScheduleChanged(**env("changed"), user_id=cmd.user_id, definition=cmd.definition, baseline=baseline)]
    if isinstance(cmd, sc.PauseSchedule):
        return [sc.SchedulePaused(**env("paused"), user_id=cmd.user_id)] if state.status == "active" else []
    if isinstance(cmd, sc.ResumeSchedule):
        return [sc.ScheduleResumed(**env("resumed"), user_id=cmd.user_id)] if state.status == "paused" else []
    if isinstance(cmd, sc.DeleteSchedule):
        return [sc.ScheduleDeleted(**env("deleted"), user_id=cmd.user_id)]
    return []


def _lateness_ms(cmd: sc.FireSchedule, now: datetime) -> float:
    since = cmd.due_at or cmd.seen_at or cmd.issued_at
    return max(0.0, (now - sc.utc(since)).total_seconds() * 1000)


def fire(cmd: sc.FireSchedule, state: ScheduleState | None, now: datetime, grace_s: float) -> list[Event]:
    """The firing of ``cmd.due_key``: nothing when the schedule is gone, paused (a person's ``manual`` firing
    still runs) or the key handled; a :class:`ScheduleMissed` first when the due time is older than ``grace_s``
    seconds or earlier due times were missed; then the run (:class:`ScheduleFired`) unless the missed policy is
    ``skip``, or the overlap policy holds it back (:class:`ScheduleSkipped` / :class:`ScheduleQueued`)."""
    if state is None or state.status == "deleted":
        return []
    if state.status == "paused" and cmd.reason != "manual":
        return []
    if cmd.reason == "manual" and cmd.user_id != state.user_id:
        return []
    if state.handled(cmd.due_key, cmd.due_at if cmd.reason in ("due", "catch_up") else None):
        return []
    env = envelope(cmd, state.schedule_id, now)
    events: list[Event] = []
    late = cmd.due_at is not None and cmd.reason in ("due", "catch_up") and _lateness_ms(cmd, now) > grace_s * 1000
    reason = cmd.reason
    if cmd.missed_count > 0 or late:
        assert cmd.due_at is not None
        policy = state.definition.missed
        events.append(
            sc.ScheduleMissed(
                **env("missed"),
                due_key=cmd.due_key,
                due_at=cmd.due_at,
                first_due_at=cmd.first_missed_at or cmd.due_at,
                count=max(cmd.missed_count, 1),
                policy=policy,
            )
        )
        if policy == "skip":
            return events
        reason = "catch_up"
    overlap = state.definition.overlap
    if state.running and overlap == "skip":
        return [
            *events,
            sc.ScheduleSkipped(
                **env("skipped"), due_key=cmd.due_key, due_at=cmd.due_at, running=next(iter(state.running))
            ),
        ]
    if state.running and overlap == "queue":
        return [
            *events,
            sc.ScheduleQueued(
                **env("queued"), due_key=cmd.due_key, due_at=cmd.due_at, detail=cmd.detail, payload=cmd.payload
            ),
        ]
    return [
        *events,
        sc.ScheduleFired(
            **env("fired"),
            due_key=cmd.due_key,
            due_at=cmd.due_at,
            run_id=sc.run_id_of(state.schedule_id, cmd.due_key),
            reason=reason,
            lateness_ms=_lateness_ms(cmd, now),
            detail=cmd.detail,
            payload=cmd.payload,
        ),
    ]


def close_run(cmd: sc.CloseScheduleRun, state: ScheduleState | None, now: datetime) -> list[Event]:
    """The end of run ``cmd.run_id``; then the oldest queued firing starts (``queued``)."""
    if state is None or cmd.run_id not in state.running:
        return []
    env = envelope(cmd, state.schedule_id, now)
    duration_ms = max(0.0, (sc.utc(cmd.ended_at) - state.running[cmd.run_id]).total_seconds() * 1000)
    events: list[Event] = [
        sc.ScheduleRunCompleted(**env("run_completed"), run_id=cmd.run_id, duration_ms=duration_ms)
        if cmd.error_code is None
        else sc.ScheduleRunFailed(
            **env("run_failed"),
            run_id=cmd.run_id,
            duration_ms=duration_ms,
            error_code=cmd.error_code,
            message=cmd.message[:500],
        )
    ]
    if state.queued and len(state.running) == 1 and state.status != "deleted":
        head = state.queued[0]
        since = head.due_at or now
        events.append(
            sc.ScheduleFired(
                **env("fired_queued"),
                due_key=head.due_key,
                due_at=head.due_at,
                run_id=sc.run_id_of(state.schedule_id, head.due_key),
                reason="queued",
                lateness_ms=max(0.0, (now - sc.utc(since)).total_seconds() * 1000),
                detail=head.detail,
                payload=head.payload,
            )
        )
    return events

"""One schedule's decision state, folded from its events (:func:`evolve_schedule`): the same fold runs in memory (the
orchestrator's decisions) and in the projection (stored as JSON in ``schedules.state_json``, the snapshot a restart
starts from). Pure, no I/O."""

from __future__ import annotations

from datetime import datetime

import msgspec

from hermes_proto import schedules as sc
from hermes_proto.base import Event

EVENTS_KEPT = 256
"""Event ids remembered per schedule: applying one of them again changes nothing (the fold is idempotent)."""
KEYS_KEPT = 512
"""Due keys remembered per schedule (the newest): a key handled once is never fired again. Timed due keys are also
covered by ``last_due_at`` (every due time up to it is handled), so this bounds only triggers and manual firings."""


class Queued(msgspec.Struct, frozen=True, kw_only=True):
    due_key: str
    due_at: datetime | None = None
    detail: str = ""
    payload: str = ""


class ScheduleState(msgspec.Struct, kw_only=True):
    """``status`` active, paused or deleted; ``active_since`` when due times began to count (created, changed or
    resumed); ``last_due_at`` the latest due time handled (fired, missed, skipped or queued); ``keys`` the newest
    handled due keys; ``running`` run id → started; ``queued`` firings waiting for the running one;
    ``failures_in_row`` runs failed or due times missed since the last completed run."""

    schedule_id: str
    user_id: str
    definition: sc.Definition
    channel: str = "api"
    baseline: str = ""
    status: str = "active"
    created_at: datetime
    active_since: datetime
    last_due_at: datetime | None = None
    keys: list[str] = []
    running: dict[str, datetime] = {}
    queued: list[Queued] = []
    runs: int = 0
    failures_in_row: int = 0
    last_outcome: str = ""
    last_run_at: datetime | None = None
    applied: list[str] = []

    def handled(self, key: str, due_at: datetime | None) -> bool:
        """Whether the firing ``key`` (due at ``due_at`` for a timed one) was already decided."""
        if key in self.keys or any(q.due_key == key for q in self.queued):
            return True
        return due_at is not None and self.last_due_at is not None and sc.utc(due_at) <= self.last_due_at

    def timed(self) -> bool:
        return self.definition.when.kind in sc.TIMED


def _remember(state: ScheduleState, key: str, due_at: datetime | None) -> None:
    state.keys.append(key)
    del state.keys[:-KEYS_KEPT]
    if due_at is not None and (state.last_due_at is None or sc.utc(due_at) > state.last_due_at):
        state.last_due_at = sc.utc(due_at)


def evolve_schedule(state: ScheduleState | None, e: Event) -> ScheduleState | None:
    """The state after ``e`` (None before a creation; events of an unknown schedule are ignored)."""
    if isinstance(e, sc.ScheduleCreated):
        if state is not None:
            return state
        at = sc.utc(e.occurred_at)
        return ScheduleState(
            applied=[e.event_id],
            schedule_id=e.aggregate_id,
            user_id=e.user_id,
            definition=e.definition,
            channel=e.channel,
            baseline=e.baseline,
            created_at=at,
            active_since=at,
        )
    if state is None or e.event_id in state.applied:
        return state
    state.applied.append(e.event_id)
    del state.applied[:-EVENTS_KEPT]
    at = sc.utc(e.occurred_at)
    if isinstance(e, sc.ScheduleChanged):
        state.definition, state.baseline, state.active_since = e.definition, e.baseline, at
        state.last_due_at = None
    elif isinstance(e, sc.SchedulePaused):
        state.status = "paused"
    elif isinstance(e, sc.ScheduleResumed):
        state.status, state.active_since, state.last_due_at = "active", at, None
    elif isinstance(e, sc.ScheduleDeleted):
        state.status = "deleted"
    elif isinstance(e, sc.ScheduleFired):
        _remember(state, e.due_key, e.due_at)
        state.queued = [q for q in state.queued if q.due_key != e.due_key]
        state.running[e.run_id] = at
        state.runs += 1
        state.last_run_at = at
    elif isinstance(e, sc.ScheduleMissed):
        _remember(state, e.due_key, e.due_at)
        state.failures_in_row += 1
        state.last_outcome = "missed"
    elif isinstance(e, sc.ScheduleSkipped):
        _remember(state, e.due_key, e.due_at)
        state.last_outcome = "skipped"
    elif isinstance(e, sc.ScheduleQueued):
        if e.due_at is not None and (state.last_due_at is None or sc.utc(e.due_at) > state.last_due_at):
            state.last_due_at = sc.utc(e.due_at)
        state.queued.append(Queued(due_key=e.due_key, due_at=e.due_at, detail=e.detail, payload=e.payload))
    elif isinstance(e, sc.ScheduleRunCompleted):
        if state.running.pop(e.run_id, None) is not None:
            state.failures_in_row, state.last_outcome = 0, "completed"
    elif isinstance(e, sc.ScheduleRunFailed) and state.running.pop(e.run_id, None) is not None:
        state.failures_in_row += 1
        state.last_outcome = "failed"
    return state

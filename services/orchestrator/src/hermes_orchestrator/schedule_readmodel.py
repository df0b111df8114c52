"""The schedules' projection: each schedule event applied to the rows of :mod:`hermes_orchestrator.schedule_tables`,
the schedule's state folded with the same :func:`~hermes_orchestrator.schedule_state.evolve_schedule` the in-memory
fold uses and stored as JSON (the snapshot), its next due time computed with
:func:`hermes_proto.schedules.next_due`. Idempotent: a row is keyed by schedule and due key."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from hermes_proto import schedules as sc
from hermes_proto.base import Event
from hermes_proto.rowstore import RowStore, rows

from hermes_orchestrator.schedule_state import ScheduleState, evolve_schedule
from hermes_orchestrator.schedule_tables import ScheduleRow, ScheduleRunRow

Schedule = rows(ScheduleRow)
Run = rows(ScheduleRunRow)
SCHEDULE_ROWS = (Schedule, Run)

_encoder = msgspec.json.Encoder()
MISSED_PREFIX = "missed:"
"""The ``schedule_runs`` key of a missed record (the catch-up run of ``run_once`` keeps the due key itself)."""


def load_state(state_json: str) -> ScheduleState | None:
    if not state_json or state_json == "{}":
        return None
    return msgspec.json.decode(state_json, type=ScheduleState)


def next_due_of(state: ScheduleState) -> datetime | None:
    """When the schedule is next due (None: paused, deleted, a trigger, a one-shot done)."""
    if state.status != "active" or not state.timed():
        return None
    return sc.next_due(state.definition.when, state.last_due_at or state.active_since)


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def apply_schedule(e: Event, store: RowStore) -> None:
    """Apply one schedule event (events of an unknown schedule are ignored)."""
    row = store.get(Schedule, e.aggregate_id)
    if isinstance(e, sc.ScheduleCreated):
        if row is not None:
            return
        row = Schedule(
            schedule_id=e.aggregate_id,
            user_id=e.user_id,
            name=e.definition.name,
            when_kind=e.definition.when.kind,
            definition_json=_encoder.encode(e.definition).decode(),
            created_at=_utc(e.occurred_at),
            updated_at=_utc(e.occurred_at),
        )
        store.add(row)
        state = evolve_schedule(None, e)
    elif row is None:
        return
    else:
        state = evolve_schedule(load_state(row.state_json), e)
    assert state is not None
    row.state_json = _encoder.encode(state).decode()
    row.status, row.name, row.when_kind = state.status, state.definition.name, state.definition.when.kind
    row.definition_json = _encoder.encode(state.definition).decode()
    row.next_due_at = next_due_of(state)
    row.last_outcome, row.last_run_at, row.runs = state.last_outcome, state.last_run_at, state.runs
    row.failures_in_row = state.failures_in_row
    row.updated_at = _utc(e.occurred_at)
    _run_row(e, store, row)


def _run_row(e: Event, store: RowStore, schedule: ScheduleRow) -> None:
    at = _utc(e.occurred_at)
    match e:
        case sc.ScheduleFired():
            run = store.get(Run, e.aggregate_id, e.due_key)
            if run is None:
                run = Run(schedule_id=e.aggregate_id, due_key=e.due_key, outcome="running", recorded_at=at)
                store.add(run)
            run.run_id, run.outcome, run.reason, run.due_at = e.run_id, "running", e.reason, e.due_at
            run.lateness_ms, run.detail = e.lateness_ms, e.detail
        case sc.ScheduleMissed():
            schedule.missed += e.count
            store.insert_absent(
                Run(
                    schedule_id=e.aggregate_id,
                    due_key=MISSED_PREFIX + e.due_key,
                    outcome="missed",
                    reason=e.policy,
                    due_at=e.due_at,
                    recorded_at=at,
                    missed_count=e.count,
                    detail=f"{e.count} due time(s) from {sc.due_key(e.first_due_at)} missed",
                )
            )
        case sc.ScheduleSkipped() | sc.ScheduleQueued():
            outcome = "skipped" if isinstance(e, sc.ScheduleSkipped) else "queued"
            detail = f"run {e.running} still going" if isinstance(e, sc.ScheduleSkipped) else e.detail
            store.insert_absent(
                Run(
                    schedule_id=e.aggregate_id,
                    due_key=e.due_key,
                    outcome=outcome,
                    due_at=e.due_at,
                    recorded_at=at,
                    detail=detail,
                )
            )
        case sc.ScheduleRunCompleted() | sc.ScheduleRunFailed():
            for run in _runs_of(store, e.aggregate_id, e.run_id):
                run.outcome = "completed" if isinstance(e, sc.ScheduleRunCompleted) else "failed"
                run.ended_at, run.duration_ms = at, e.duration_ms
                if isinstance(e, sc.ScheduleRunFailed):
                    run.error_code, run.message = e.error_code, e.message


def _runs_of(store: RowStore, schedule_id: str, run_id: str) -> list:
    """The run row of ``run_id`` (its due key is not in the event: the state's keys name it)."""
    schedule = store.get(Schedule, schedule_id)
    state = load_state(schedule.state_json) if schedule is not None else None
    found = []
    for key in reversed(state.keys if state is not None else []):
        if sc.run_id_of(schedule_id, key) == run_id:
            run = store.get(Run, schedule_id, key)
            if run is not None:
                found.append(run)
            break
    return found

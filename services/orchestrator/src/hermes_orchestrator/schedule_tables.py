"""The schedules' read-model tables: ``schedules`` (one row per schedule with its decision state as JSON, the
snapshot the fold restarts from, and what the Schedules page lists) and ``schedule_runs`` (every handled due key:
fired, missed, skipped or queued, and how the run ended). Written by :mod:`hermes_orchestrator.schedule_readmodel`;
every value comes from an event."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class ScheduleRow(SQLModel, table=True):
    __tablename__ = "schedules"

    schedule_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    name: str
    when_kind: str
    status: str = "active"
    definition_json: str
    next_due_at: datetime | None = None
    last_outcome: str = ""
    last_run_at: datetime | None = None
    runs: int = 0
    missed: int = 0
    failures_in_row: int = 0
    created_at: datetime
    updated_at: datetime
    state_json: str = "{}"
    """The schedule's :class:`~hermes_orchestrator.schedule_state.ScheduleState` after the last applied event."""


class ScheduleRunRow(SQLModel, table=True):
    __tablename__ = "schedule_runs"

    schedule_id: str = Field(primary_key=True)
    due_key: str = Field(primary_key=True)
    run_id: str | None = Field(default=None, index=True)
    outcome: str
    """running, completed, failed, missed, skipped or queued."""
    reason: str = ""
    due_at: datetime | None = None
    recorded_at: datetime = Field(index=True)
    lateness_ms: float | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    message: str = ""
    detail: str = ""
    missed_count: int = 0

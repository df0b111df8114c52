"""Request/reply contract of the schedules' read model (the orchestrator answers; the gateway, CLI and notifier ask):
``hermes.query.schedules`` (a user's schedules) and ``hermes.query.schedule`` (one, with its latest runs). A query
with ``user_id`` None is an operator's (every user's)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from hermes_proto.queries import StreamSequence
from hermes_proto.schedules import Definition


class ScheduleRunView(msgspec.Struct, frozen=True, kw_only=True):
    """One handled due key: ``outcome`` running, completed, failed, missed, skipped or queued; ``run_id`` the
    run's thread (an idea, agent run or workflow); times UTC, ``lateness_ms`` / ``duration_ms`` in ms."""

    due_key: str
    run_id: str | None = None
    outcome: str
    reason: str = ""
    due_at: datetime | None = None
    recorded_at: datetime
    lateness_ms: float | None = None
    ended_at: datetime | None = None
    duration_ms: float | None = None
    error_code: str | None = None
    message: str = ""
    detail: str = ""


class ScheduleView(msgspec.Struct, frozen=True, kw_only=True):
    """One schedule: ``status`` active, paused or deleted; ``next_due_at`` (None: a trigger, paused, done);
    ``last_outcome`` of its latest firing; ``failures_in_row`` failed runs or missed due times since the last
    completed run; ``runs`` only in a single-schedule reply."""

    schedule_id: str
    user_id: str
    definition: Definition
    status: str
    next_due_at: datetime | None = None
    last_outcome: str = ""
    last_run_at: datetime | None = None
    runs_total: int = 0
    missed_total: int = 0
    failures_in_row: int = 0
    running: list[str] = []
    created_at: datetime
    updated_at: datetime
    runs: list[ScheduleRunView] = []


class SchedulesQuery(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str | None = None
    include_deleted: bool = False
    limit: int = 200
    min_sequence: StreamSequence = 0


class SchedulesReply(msgspec.Struct, frozen=True, kw_only=True):
    schedules: list[ScheduleView] = []


class ScheduleQuery(msgspec.Struct, frozen=True, kw_only=True):
    schedule_id: str
    user_id: str | None = None
    runs_limit: int = 50
    min_sequence: StreamSequence = 0


class ScheduleReply(msgspec.Struct, frozen=True, kw_only=True):
    found: bool
    schedule: ScheduleView | None = None

"""Answers ``hermes.query.schedules`` and ``hermes.query.schedule`` from the read model
(:mod:`hermes_orchestrator.schedule_tables`), after waiting (bounded) for a ``min_sequence`` the asker has seen."""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from hermes_proto import subjects
from hermes_proto.rpc import answering
from hermes_proto.schedule_queries import (
    ScheduleQuery,
    ScheduleReply,
    ScheduleRunView,
    SchedulesQuery,
    SchedulesReply,
    ScheduleView,
)
from hermes_proto.schedules import Definition

from hermes_orchestrator.queries import QueryResponder
from hermes_orchestrator.schedule_readmodel import load_state
from hermes_orchestrator.schedule_tables import ScheduleRow, ScheduleRunRow


def schedule_view(row: ScheduleRow, runs: list[ScheduleRunView] | None = None) -> ScheduleView:
    state = load_state(row.state_json)
    return ScheduleView(
        schedule_id=row.schedule_id,
        user_id=row.user_id,
        definition=msgspec.json.decode(row.definition_json, type=Definition),
        status=row.status,
        next_due_at=row.next_due_at,
        last_outcome=row.last_outcome,
        last_run_at=row.last_run_at,
        runs_total=row.runs,
        missed_total=row.missed,
        failures_in_row=row.failures_in_row,
        running=sorted(state.running) if state is not None else [],
        created_at=row.created_at,
        updated_at=row.updated_at,
        runs=runs or [],
    )


def run_view(row: ScheduleRunRow) -> ScheduleRunView:
    return ScheduleRunView(
        due_key=row.due_key,
        run_id=row.run_id,
        outcome=row.outcome,
        reason=row.reason,
        due_at=row.due_at,
        recorded_at=row.recorded_at,
        lateness_ms=row.lateness_ms,
        ended_at=row.ended_at,
        duration_ms=row.duration_ms,
        error_code=row.error_code,
        message=row.message,
        detail=row.detail,
    )


def list_schedules(session: Session, q: SchedulesQuery) -> list[ScheduleView]:
    query = select(ScheduleRow).order_by(col(ScheduleRow.created_at).desc()).limit(max(1, min(q.limit, 1000)))
    if q.user_id is not None:
        query = query.where(ScheduleRow.user_id == q.user_id)
    if not q.include_deleted:
        query = query.where(ScheduleRow.status != "deleted")
    return [schedule_view(r) for r in session.exec(query)]


def one_schedule(session: Session, q: ScheduleQuery) -> ScheduleView | None:
    row = session.get(ScheduleRow, q.schedule_id)
    if row is None or (q.user_id is not None and row.user_id != q.user_id):
        return None
    runs = session.exec(
        select(ScheduleRunRow)
        .where(ScheduleRunRow.schedule_id == q.schedule_id)
        .order_by(col(ScheduleRunRow.recorded_at).desc())
        .limit(max(1, min(q.runs_limit, 500)))
    )
    return schedule_view(row, [run_view(r) for r in runs])


class ScheduleQueries:
    """The schedule queries, answered with the orchestrator's :class:`QueryResponder` (its read model, decoding
    and ``too_large`` / ``bad_request`` replies)."""

    def __init__(self, base: QueryResponder) -> None:
        self.base = base

    async def subscribe(self) -> None:
        for subject, handler in ((subjects.QUERY_SCHEDULES, self._list), (subjects.QUERY_SCHEDULE, self._one)):
            await self.base.nc.subscribe(subject, queue="orchestrator", cb=answering("orchestrator", handler))

    async def _list(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, SchedulesQuery)) is None:
            return
        found = await asyncio.to_thread(self.base._read, list_schedules, q)
        await self.base._respond(msg, SchedulesReply(schedules=found))

    async def _one(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, ScheduleQuery)) is None:
            return
        view = await asyncio.to_thread(self.base._read, one_schedule, q)
        await self.base._respond(msg, ScheduleReply(found=view is not None, schedule=view))

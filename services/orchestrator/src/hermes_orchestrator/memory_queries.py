"""Answers ``hermes.query.memory_entries`` from ``project_memory`` (:mod:`hermes_orchestrator.memory_tables`), after
waiting (bounded) for a ``min_sequence`` the asker has seen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from hermes_proto import subjects
from hermes_proto.ids import utcnow
from hermes_proto.memory_queries import MemoryEntriesQuery, MemoryEntriesReply, MemoryEntryView
from hermes_proto.rpc import answering

from hermes_orchestrator.memory_tables import ProjectMemoryRow
from hermes_orchestrator.queries import QueryResponder


def entry_view(row: ProjectMemoryRow, now: datetime) -> MemoryEntryView:
    expires = row.expires_at
    if expires is not None and expires.tzinfo is None:  # SQLite gives times back naive: they are UTC
        expires = expires.replace(tzinfo=UTC)
    expired = row.status == "live" and expires is not None and expires <= now
    return MemoryEntryView(
        entry_id=row.entry_id,
        user_id=row.user_id,
        project=row.project,
        kind=row.kind,
        key=row.key,
        text=row.text,
        relevance=round(row.relevance, 4),
        status="expired" if expired else row.status,
        source_session=row.source_session,
        sessions=row.sessions,
        supersedes=row.supersedes,
        superseded_by=row.superseded_by,
        recorded_at=row.recorded_at,
        updated_at=row.updated_at,
        expires_at=row.expires_at,
    )


def list_entries(session: Session, q: MemoryEntriesQuery) -> list[MemoryEntryView]:
    query = select(ProjectMemoryRow).order_by(
        col(ProjectMemoryRow.project), col(ProjectMemoryRow.relevance).desc(), col(ProjectMemoryRow.recorded_at).desc()
    )
    if q.user_id is not None:
        query = query.where(ProjectMemoryRow.user_id == q.user_id)
    if q.project is not None:
        query = query.where(ProjectMemoryRow.project == q.project)
    if not q.history:
        query = query.where(ProjectMemoryRow.status == "live")
    now = utcnow()
    views = [entry_view(r, now) for r in session.exec(query.limit(max(1, min(q.limit, 2000))))]
    return views if q.history else [v for v in views if v.status == "live"]


class MemoryQueries:
    def __init__(self, base: QueryResponder) -> None:
        self.base = base

    async def subscribe(self) -> None:
        await self.base.nc.subscribe(
            subjects.QUERY_MEMORY_ENTRIES, queue="orchestrator", cb=answering("orchestrator", self._list)
        )

    async def _list(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, MemoryEntriesQuery)) is None:
            return
        found = await asyncio.to_thread(self.base._read, list_entries, q)
        await self.base._respond(msg, MemoryEntriesReply(entries=found))

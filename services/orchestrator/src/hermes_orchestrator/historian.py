"""The historian: what ended sessions and threads taught, promoted into project memory.

Every ``interval_s`` (``HERMES_HISTORIAN_INTERVAL_MINUTES``, default 60) partition 0 sends one
``ConsolidateMemory`` per user with ended threads in the window (command id derived from user and hour, so a
restart within the hour sends the same command); ``POST /api/memory/consolidate`` and ``hermes memory consolidate``
send one now. The decision (:class:`MemoryHandlers`) reads the user's ended threads of the last ``window_days`` from
the read model (ideas and answers, chat and agent turns with their replies), extracts candidates and consolidates
them into the entries the fold holds (:mod:`hermes_proto.project_memory`: merged, contradictions superseded,
idempotent), then appends the events. Edits and deletes are decided here too."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hermes_proto import project_memory as pm
from hermes_proto import threads
from hermes_proto.base import Command, Event
from hermes_proto.bus import EventStore
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.memory_extract import Turn, candidates

from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.tables import MemoryRow, QuestionRow, ThreadRow

log = structlog.get_logger("hermes.orchestrator")

MEMORY_ENTRIES = Counter(
    "hermes_memory_entries_total",
    "Project memory changes by kind: recorded, merged, superseded, edited, deleted",
    ["change"],
)
CONSOLIDATIONS = Counter("hermes_memory_consolidations_total", "Historian runs", ["outcome"])
MAX_THREADS = 2000
"""Ended threads one consolidation reads at most (the newest)."""
APPEND_CHUNK = 200


def user_turns(session: Session, user_id: str, project: str | None, since: datetime) -> list[Turn]:
    """``user_id``'s turns since ``since`` (of ``project``; None: all), oldest first: of each ended thread its idea
    and answers, of every thread (a chat session stays open) each completed chat or agent turn's user message and
    reply. The session is the thread."""
    ended = (
        select(ThreadRow)
        .where(ThreadRow.user_id == user_id, col(ThreadRow.status).in_(threads.FINAL_STATUSES))
        .where(ThreadRow.updated_at >= since)
        .order_by(col(ThreadRow.updated_at).desc())
        .limit(MAX_THREADS)
    )
    talked = select(MemoryRow.thread_id).where(MemoryRow.user_id == user_id, MemoryRow.created_at >= since).distinct()
    chatty = select(ThreadRow).where(col(ThreadRow.thread_id).in_(talked.limit(MAX_THREADS)))
    found = {t.thread_id: t for q in (ended, chatty) for t in session.exec(q)}
    if project is not None:
        found = {k: t for k, t in found.items() if t.project == project}
    if not found:
        return []
    turns: list[Turn] = []
    chats = session.exec(
        select(MemoryRow).where(col(MemoryRow.thread_id).in_(list(found))).order_by(MemoryRow.created_at)
    )
    with_turns: set[str] = set()
    for m in chats:
        t = found[m.thread_id]
        with_turns.add(m.thread_id)
        turns.append(Turn(m.thread_id, "user", m.prompt, m.created_at, t.project, user_id))
        turns.append(Turn(m.thread_id, "assistant", m.reply, m.created_at, t.project, user_id))
    answers: dict[str, list[QuestionRow]] = {}
    for q in session.exec(
        select(QuestionRow).where(col(QuestionRow.thread_id).in_(list(found))).order_by(QuestionRow.position)
    ):
        if q.answer:
            answers.setdefault(q.thread_id, []).append(q)
    for thread_id, t in found.items():
        if t.status not in threads.FINAL_STATUSES:
            continue
        if t.kind == "idea" and thread_id not in with_turns:
            turns.append(Turn(thread_id, "user", t.idea, t.created_at, t.project, user_id))
        for q in answers.get(thread_id, []):
            turns.append(Turn(thread_id, "assistant", q.text, q.answered_at or t.updated_at, t.project, user_id))
            turns.append(Turn(thread_id, "user", q.answer or "", q.answered_at or t.updated_at, t.project, user_id))
    turns.sort(key=lambda x: (x.at, x.session_id))
    return turns


def users_with_ended_threads(session: Session, since: datetime) -> list[str]:
    query = select(ThreadRow.user_id).where(
        col(ThreadRow.status).in_(threads.FINAL_STATUSES), ThreadRow.updated_at >= since
    )
    talked = select(MemoryRow.user_id).where(MemoryRow.created_at >= since).distinct()
    return sorted(set(session.exec(query.distinct())) | set(session.exec(talked)))


class MemoryHandlers:
    """``on_command`` for :data:`hermes_proto.project_memory.MEMORY_COMMANDS`, one at a time (lock ``memory``)."""

    def __init__(
        self,
        fold: ThreadFold,
        engine: Engine,
        lock: Callable[[str], AbstractAsyncContextManager],
        append: Callable[[list[Event]], Awaitable[None]],
        window_days: float,
    ) -> None:
        self.fold, self.engine, self._lock, self._append, self.window_days = fold, engine, lock, append, window_days

    def _turns(self, user_id: str, project: str | None, since: datetime) -> list[Turn]:
        with Session(self.engine) as session:
            return user_turns(session, user_id, project, since)

    async def on_command(self, cmd: Command) -> None:
        async with self._lock("memory"):
            now = utcnow()
            if isinstance(cmd, pm.ConsolidateMemory):
                since = now - timedelta(days=self.window_days)
                turns = await asyncio.to_thread(self._turns, cmd.user_id, cmd.project, since)
                found = candidates(turns, now)
                events = pm.consolidate(
                    list(self.fold.memory.values()),
                    found,
                    now,
                    correlation_id=cmd.correlation_id or cmd.command_id,
                    causation_id=cmd.command_id,
                )
                CONSOLIDATIONS.labels("changed" if events else "unchanged").inc()
                log.info(
                    "memory_consolidated",
                    user_id=cmd.user_id,
                    project=cmd.project,
                    turns=len(turns),
                    candidates=len(found),
                    events=len(events),
                )
            elif isinstance(cmd, pm.EditMemoryEntry):
                events = pm.decide_edit(self.fold.memory, cmd, now)
            elif isinstance(cmd, pm.DeleteMemoryEntry):
                events = pm.decide_delete(self.fold.memory, cmd, now)
            else:
                events = []
            for start in range(0, len(events), APPEND_CHUNK):
                await self._append(events[start : start + APPEND_CHUNK])
            for e in events:
                MEMORY_ENTRIES.labels(e.type_name().removeprefix("memory_entry_")).inc()


class Historian:
    """Sends the hourly ``ConsolidateMemory`` of every user with ended threads in the window."""

    def __init__(self, engine: Engine, store: EventStore, interval_s: float, window_days: float) -> None:
        self.engine, self.store, self.interval_s, self.window_days = engine, store, interval_s, window_days

    def _users(self, since: datetime) -> list[str]:
        with Session(self.engine) as session:
            return users_with_ended_threads(session, since)

    async def once(self) -> int:
        now = utcnow()
        users = await asyncio.to_thread(self._users, now - timedelta(days=self.window_days))
        slot = str(int(now.timestamp() // self.interval_s))
        for user in users:
            await self.store.send(
                pm.ConsolidateMemory(command_id=derived_id("historian", user, slot), issued_at=now, user_id=user)
            )
        return len(users)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
                return
            except TimeoutError:
                pass
            try:
                await self.once()
            except Exception as exc:  # the historian must never stop the service
                log.warning("historian_failed", error=repr(exc))

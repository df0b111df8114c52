"""Request/reply contract of project memory's read model (``hermes.query.memory_entries``; the orchestrator answers,
the gateway and CLI ask). A query with ``user_id`` None is an operator's (every user's)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from hermes_proto.queries import StreamSequence


class MemoryEntryView(msgspec.Struct, frozen=True, kw_only=True):
    """One entry: ``kind`` decision, pattern, correction or preference; ``status`` live, superseded, expired or
    deleted; ``relevance`` 0..1; ``sessions`` how many sessions said it; times UTC."""

    entry_id: str
    user_id: str
    project: str
    kind: str
    key: str
    text: str
    relevance: float
    status: str
    source_session: str
    sessions: int = 1
    supersedes: str | None = None
    superseded_by: str | None = None
    recorded_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


class MemoryEntriesQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``history``: also superseded, expired and deleted entries."""

    user_id: str | None = None
    project: str | None = None
    history: bool = False
    limit: int = 200
    min_sequence: StreamSequence = 0


class MemoryEntriesReply(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[MemoryEntryView] = []

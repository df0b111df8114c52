"""Project memory's projection: each memory entry event folded with :func:`hermes_proto.project_memory.evolve` (the
fold the orchestrator keeps in memory) and written to ``project_memory`` (:mod:`memory_tables`), the state as JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from hermes_proto import project_memory as pm
from hermes_proto.base import Event
from hermes_proto.rowstore import RowStore, rows

from hermes_orchestrator.memory_tables import ProjectMemoryRow

Entry = rows(ProjectMemoryRow)
MEMORY_ROWS = (Entry,)
_encoder = msgspec.json.Encoder()


def load_entry(state_json: str) -> pm.EntryState | None:
    if not state_json or state_json == "{}":
        return None
    return msgspec.json.decode(state_json, type=pm.EntryState)


def _utc(ts: datetime | None) -> datetime | None:
    return ts.astimezone(UTC) if ts is not None else None


def apply_memory(e: Event, store: RowStore) -> None:
    """Apply one memory entry event (an event of an unknown entry, other than its recording, changes nothing)."""
    if not isinstance(e, pm.MemoryEntryEvent):
        return
    row = store.get(Entry, e.entry_id)
    current = {e.entry_id: load_entry(row.state_json)} if row is not None else {}
    entry = pm.evolve({k: v for k, v in current.items() if v is not None}, e).get(e.entry_id)
    if entry is None:
        return
    if row is None:
        row = Entry(
            entry_id=entry.entry_id,
            user_id=entry.user_id,
            project=entry.project,
            kind=entry.kind,
            key=entry.key,
            text=entry.text,
            relevance=entry.relevance,
            source_session=entry.sessions[0] if entry.sessions else "",
            recorded_at=_utc(entry.recorded_at),
            stated_at=_utc(entry.stated_at),
            updated_at=_utc(entry.updated_at),
        )
        store.add(row)
    row.kind, row.text, row.relevance, row.sessions = entry.kind, entry.text, entry.relevance, len(entry.sessions)
    row.supersedes, row.superseded_by = entry.supersedes, entry.superseded_by
    row.expires_at, row.updated_at = _utc(entry.expires_at), _utc(entry.updated_at)
    row.status = "deleted" if entry.deleted else ("superseded" if entry.superseded_by else "live")
    row.state_json = _encoder.encode(entry).decode()

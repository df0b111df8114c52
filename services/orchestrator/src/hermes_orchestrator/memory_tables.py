"""Project memory's read-model table ``project_memory``: one row per entry (decision, pattern, correction,
preference) with what the historian recorded and what later events made of it (merged, superseded, edited,
deleted), and the entry's state as JSON (the snapshot the fold starts from). Written by
:mod:`hermes_orchestrator.memory_readmodel`; every value comes from an event."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class ProjectMemoryRow(SQLModel, table=True):
    __tablename__ = "project_memory"

    entry_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    project: str = Field(index=True)
    kind: str
    key: str
    text: str
    relevance: float
    status: str = "live"
    """live, superseded, expired (by ``expires_at``, decided when read), or deleted."""
    source_session: str
    sessions: int = 1
    supersedes: str | None = None
    superseded_by: str | None = None
    recorded_at: datetime
    stated_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    state_json: str = "{}"

"""SQL plumbing of the services that keep read models (orchestrator, learner): the engine and the projection
position row. Needs the ``sql`` extra (``hermes-proto[sql]``, i.e. sqlmodel); services without read models,
such as the talos-edge, never import this module.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import MetaData
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine


class PositionRow(Protocol):
    """A table with one row per projection: ``name`` (primary key) and ``last_sequence`` (stream sequence)."""

    name: str
    last_sequence: int

    def __init__(self, **fields: Any) -> None: ...


def make_engine(url: str, metadata: MetaData) -> Engine:
    """An engine for ``url`` (SQLite file or e.g. PostgreSQL) with ``metadata``'s tables created. SQLite runs in
    WAL mode with ``synchronous=NORMAL``: a crash may lose the last transactions but never corrupts the file,
    and a projection re-applies what was lost from the log (its position is in the same transaction)."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False} if sqlite else {})
    if sqlite:
        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()
    metadata.create_all(engine)
    return engine


def load_position(session: Session, table: type[PositionRow], name: str) -> int:
    """The last stream sequence projection ``name`` applied (0: nothing yet)."""
    row = session.get(table, name)
    return row.last_sequence if row else 0


def save_position(session: Session, table: type[PositionRow], name: str, sequence: int) -> None:
    """Record ``sequence`` as applied; the caller commits it together with the rows it applied."""
    row = session.get(table, name) or table(name=name)
    row.last_sequence = sequence
    session.add(row)

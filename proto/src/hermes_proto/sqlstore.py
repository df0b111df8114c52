"""SQL plumbing of the services that keep read models (orchestrator, learner): the engine and the projection
position row. Needs the ``sql`` extra (``hermes-proto[sql]``, i.e. sqlmodel); services without read models,
such as the talos-edge, never import this module.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import structlog
from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

log = structlog.get_logger("hermes.sqlstore")
_UPSERT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

_SCHEMA_META = MetaData()
_SCHEMA_TABLE = Table("read_model_schema", _SCHEMA_META, Column("fingerprint", String, primary_key=True))


def batch_session(engine: Engine) -> Session:
    """A :class:`Session` for applying one batch of the log that keeps every row it loads or adds alive until it
    closes. SQLAlchemy's identity map holds clean rows only weakly, so without this each ``session.get`` of a
    row the batch already read (a thread touched by each of its events) was collected and selected again:
    every one of 40,690 gets in a 20,000-event orchestrator replay went to SQLite (issue 9's cProfile, via
    ``bench/replay.py --profile``). A batch is bounded (LogFollower fetches at most 1,000 events), so is this."""
    session = Session(engine)
    kept: list[Any] = []
    session.info["kept_rows"] = kept
    sa_event.listen(session, "loaded_as_persistent", lambda _s, instance: kept.append(instance))
    sa_event.listen(session, "pending_to_persistent", lambda _s, instance: kept.append(instance))
    return session


def insert_absent(session: Session, row: Any) -> None:
    """Insert the table row ``row`` (a SQLModel instance) unless one with its primary key exists (the same event
    applied again): one ``INSERT ... ON CONFLICT DO NOTHING`` run at once on the session's connection and
    transaction, so nothing pending is flushed first; instead of a ``session.get`` that misses the identity
    map, flushes and selects, then an ``add``. For rows a projection only inserts: the row is not tracked by
    the session, so later code reads it back with a query. Other databases than SQLite and PostgreSQL take the
    get-then-add path. Those existence checks were ~30 % of an orchestrator replay (py-spy, bench/replay.py)."""
    table = row.__table__
    dialect = session.get_bind().dialect.name
    if dialect not in _UPSERT_INSERTS:
        key = tuple(getattr(row, c.name) for c in table.primary_key.columns)
        if session.get(type(row), key if len(key) > 1 else key[0]) is None:
            session.add(row)
        return
    values = {c.name: getattr(row, c.name) for c in table.columns}
    # On the session's connection, not Session.execute: that would flush what is pending first.
    session.connection().execute(_UPSERT_INSERTS[dialect](table).values(values).on_conflict_do_nothing())


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

    _ensure_schema(engine, metadata)
    return engine


def schema_fingerprint(metadata: MetaData) -> str:
    """SHA-256 (hex) of every table's columns: name, type, nullability, primary key."""
    parts = sorted(
        f"{table.name}.{col.name}:{col.type}:{col.nullable}:{col.primary_key}"
        for table in metadata.tables.values()
        for col in table.columns
    )
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _ensure_schema(engine: Engine, metadata: MetaData) -> None:
    """Create the tables; when they were made by another version of the code (their fingerprint differs,
    or tables exist without one), drop and recreate them. Read models are a pure function of the log, so
    the projection, whose position is dropped with them, rebuilds them by replay: that is the migration."""
    fingerprint = schema_fingerprint(metadata)
    _SCHEMA_META.create_all(engine)
    with engine.begin() as conn:
        stored = conn.execute(select(_SCHEMA_TABLE.c.fingerprint)).scalar()
        existing = set(inspect(conn).get_table_names()) & set(metadata.tables)
        if stored != fingerprint and (stored is not None or existing):
            log.warning("read_model_schema_changed", tables=sorted(existing), action="drop_and_replay")
            metadata.drop_all(conn)
        metadata.create_all(conn)
        conn.execute(_SCHEMA_TABLE.delete())
        conn.execute(_SCHEMA_TABLE.insert().values(fingerprint=fingerprint))


def load_position(session: Session, table: type[PositionRow], name: str) -> int:
    """The last stream sequence projection ``name`` applied (0: nothing yet)."""
    row = session.get(table, name)
    return row.last_sequence if row else 0


def save_position(session: Session, table: type[PositionRow], name: str, sequence: int) -> None:
    """Record ``sequence`` as applied; the caller commits it together with the rows it applied."""
    row = session.get(table, name) or table(name=name)
    row.last_sequence = sequence
    session.add(row)

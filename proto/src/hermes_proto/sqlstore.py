"""SQL plumbing of the services that keep read models (orchestrator, learner, router): the engine and the schema
fingerprint (rows are written by :mod:`hermes_proto.rowstore`). Needs the ``sql`` extra (``hermes-proto[sql]``, i.e. sqlmodel); services without read models,
such as the talos-edge, never import this module.
"""

from __future__ import annotations

import hashlib

import structlog
from sqlalchemy import Column, MetaData, String, Table, inspect, select
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import create_engine

log = structlog.get_logger("hermes.sqlstore")
_UPSERT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}

_SCHEMA_META = MetaData()
_SCHEMA_TABLE = Table("read_model_schema", _SCHEMA_META, Column("fingerprint", String, primary_key=True))


def make_engine(url: str, metadata: MetaData) -> Engine:
    """An engine for ``url`` (SQLite file or e.g. PostgreSQL) with ``metadata``'s tables created. SQLite runs in
    WAL mode with ``synchronous=NORMAL``: a crash may lose the last transactions but never corrupts the file,
    and a projection re-applies what was lost from the log (its position is in the same transaction). With
    ``secure_delete=ON`` a deleted row's bytes are zeroed in the file, not left in free pages (forgetting)."""
    sqlite = url.startswith("sqlite")
    engine = create_engine(url, connect_args={"check_same_thread": False} if sqlite else {})
    if sqlite:

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA secure_delete=ON")
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


def checkpoint(engine: Engine) -> None:
    """Checkpoint and truncate SQLite's write-ahead log, so the main file holds the zeroed pages of deleted rows and
    no log frame keeps the old ones (after a forget; best effort: an open read transaction elsewhere keeps the log
    until the next checkpoint). Nothing on another database."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").all()

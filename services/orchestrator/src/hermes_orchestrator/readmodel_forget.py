"""Forgetting in the read model: a :class:`~hermes_proto.forgetting.PersonalDataForgotten` deletes every row of the
aggregates it names and, when it names a user, of every aggregate with a row of that user (``user_id`` column), child
rows included. Deletions go through the batch's :class:`~hermes_proto.rowstore.RowStore` (by primary key), so no cached
row is served or written back; SQLite zeroes the deleted bytes (``secure_delete``, :mod:`hermes_proto.sqlstore`), the
memory index is merged so no deleted term stays in it, and the WAL is checkpointed once the batch is committed.

What goes with what is the caller's table (``tables``): aggregate type → ``(row class, column holding the aggregate's
id)``, and ``links``: ``(source type, row class, source column, target type, target column)`` (a schedule's runs are
threads: forgetting it forgets them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.engine import Connection

from hermes_proto.forgetting import PersonalDataForgotten, forgotten_aggregates
from hermes_proto.rowstore import Row, RowStore

Tables = Mapping[str, Sequence[tuple[type[Row], str]]]
Links = Sequence[tuple[str, type[Row], str, str, str]]
CHUNK = 500
"""Values per ``IN (...)``: far below SQLite's bound variables limit."""
FTS_TABLE = "memory_fts"


def forgotten_ids(conn: Connection, event: PersonalDataForgotten, tables: Tables, links: Links) -> dict[str, set[str]]:
    """Aggregate type → ids to delete: those ``event`` names, those with a row of ``event.user_id`` in ``tables``,
    and the targets of ``links`` from either. Queries ``conn`` (flush the store first)."""
    ids = {kind: set(found) for kind, found in forgotten_aggregates(event).items() if kind in tables}
    if event.user_id:
        for kind, specs in tables.items():
            for cls, column in specs:
                if "user_id" in cls.__columns__:
                    ids.setdefault(kind, set()).update(_values(conn, cls, column, "user_id", [event.user_id]))
    for source, cls, column, target, target_column in links:
        linked = _values(conn, cls, target_column, column, ids.get(source, ()))
        ids.setdefault(target, set()).update(v for v in linked if v)
    return ids


def forget_rows(store: RowStore, event: PersonalDataForgotten, tables: Tables, links: Links = ()) -> dict[type, int]:
    """Delete, in the open batch of ``store``, the rows ``event`` forgets (module docstring); returns the number of
    rows deleted per row class (written at the batch's commit)."""
    store.flush()
    conn = store.connection
    ids = forgotten_ids(conn, event, tables, links)
    deleted: dict[type, int] = {}
    for kind, specs in tables.items():
        for cls, column in specs:
            count = _delete(store, cls, column, ids.get(kind, ()))
            deleted[cls] = deleted.get(cls, 0) + count
    return deleted


def purge_fts(conn: Connection) -> None:
    """Merge the SQLite FTS5 memory index (``optimize``): a deleted row's terms leave its segments (an external
    content index only marks them deleted otherwise). Does nothing on another database or without the index."""
    if conn.dialect.name != "sqlite":
        return
    exists = conn.exec_driver_sql("SELECT 1 FROM sqlite_master WHERE name = ?", (FTS_TABLE,)).first()
    if exists is not None:
        conn.exec_driver_sql(f"INSERT INTO {FTS_TABLE}({FTS_TABLE}) VALUES ('optimize')")


def _values(conn: Connection, cls: type[Row], column: str, where: str, values: Iterable[str]) -> set[str]:
    """``column`` of the rows of ``cls`` whose ``where`` is one of ``values``."""
    table = cls.__table__
    values = sorted(set(values))
    found: set[str] = set()
    for start in range(0, len(values), CHUNK):
        query = select(table.c[column]).where(table.c[where].in_(values[start : start + CHUNK]))
        found.update(r[0] for r in conn.execute(query))
    return found


def _delete(store: RowStore, cls: type[Row], column: str, ids: Iterable[str]) -> int:
    """Delete (through ``store``) every row of ``cls`` whose ``column`` is one of ``ids``; returns how many."""
    table = cls.__table__
    ids = sorted(set(ids))
    count = 0
    for start in range(0, len(ids), CHUNK):
        query = select(*(table.c[k] for k in cls.__key__)).where(table.c[column].in_(ids[start : start + CHUNK]))
        for key in store.connection.execute(query).all():
            row = store.get(cls, *key)
            if row is not None:
                store.delete(row)
                count += 1
    return count

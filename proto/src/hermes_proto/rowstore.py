"""Read-model rows kept in memory and written in batches with SQLAlchemy Core: the write path of every projection.

A projection applies a batch of the log to plain row objects (one slotted class per table, made by :func:`rows`)
held by a :class:`RowStore`; at the end of the batch :meth:`RowStore.commit` writes what changed in ONE transaction
with the projection's position: new rows as one multi-row upsert per table, changed rows as one ``UPDATE`` per
table and set of changed columns (``executemany``; only the changed columns, so a job's prompt is not rewritten
when its status moves), deletions by key. No ORM on this path: an ORM get + set + flush costs ~200 µs a row here,
a batched Core write a few µs per column (facts.md; ``bench/replay.py``).

A service whose decisions read a few tables in memory (the router's open jobs, backends and spend) names them as
``tracked``: after each commit, :attr:`RowStore.changes` lists copies of their rows that changed (None for a
deleted row), for the service to fold into its in-memory view on the event loop.

The store keeps the rows it loaded or wrote, up to ``capacity`` per table (least recently used evicted after each
commit), and remembers keys it found absent, so a batch touching rows of recent events reads nothing; a miss is one
``SELECT`` by primary key on the batch's connection. It must be the only writer of its tables. A failed batch
(:meth:`rollback`) forgets everything cached: the next batch reads from the database again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic_core import PydanticUndefined
from sqlalchemy import Table, delete, select, update
from sqlalchemy import bindparam as bind
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine

_UPSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_ABSENT = object()
"""Cache entry of a key known not to exist."""
KEY_INDEX_MAX = 1_000_000
"""A table with more rows than this keeps no key index in memory (each key costs ~100 bytes): its misses query."""


class Row:
    """Base of the row classes :func:`rows` makes: slotted attributes named as the table's columns, keyword
    construction with the model's defaults, equality by value (for tests). ``__table__`` and ``__key__`` (primary
    key column names) are class attributes."""

    __slots__ = ("_saved",)
    __table__: ClassVar[Table]
    __columns__: ClassVar[tuple[str, ...]]
    __key__: ClassVar[tuple[str, ...]]
    __defaults__: ClassVar[dict[str, Any]]
    __factories__: ClassVar[dict[str, Callable[[], Any]]]

    def __init__(self, **values: Any) -> None:
        for name, value in self.__defaults__.items():
            object.__setattr__(self, name, value)
        for name, factory in self.__factories__.items():
            object.__setattr__(self, name, factory())
        for name, value in values.items():
            setattr(self, name, value)
        self._saved = None

    def row_key(self) -> tuple:
        """The primary key's values, in key column order."""
        return tuple(getattr(self, c) for c in self.__key__)

    def row_values(self) -> tuple:
        """Every column's value, in column order."""
        return tuple(getattr(self, c) for c in self.__columns__)

    def row_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in self.__columns__}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.row_values() == self.row_values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.row_dict().items())})"


def rows(model: Any) -> type[Row]:
    """The row class of a table model (a SQLModel class with ``table=True``): same column names and defaults, none
    of the ORM's instrumentation. Raises TypeError when ``model`` has no ``__table__``."""
    table: Table | None = getattr(model, "__table__", None)
    if table is None:
        raise TypeError(f"{model!r} is not a table model")
    columns = tuple(c.name for c in table.columns)
    defaults: dict[str, Any] = {}
    factories: dict[str, Callable[[], Any]] = {}
    fields = getattr(model, "model_fields", {})
    for name in columns:
        info = fields.get(name)
        if info is None:
            defaults[name] = None
        elif info.default_factory is not None:
            factories[name] = info.default_factory
        elif info.default is not PydanticUndefined:
            defaults[name] = info.default
        else:
            defaults[name] = None
    namespace = {
        "__slots__": columns,
        "__table__": table,
        "__columns__": columns,
        "__key__": tuple(c.name for c in table.primary_key.columns),
        "__defaults__": defaults,
        "__factories__": factories,
        "__module__": getattr(model, "__module__", __name__),
        "__doc__": f"A row of ``{table.name}`` (see {model.__name__}).",
    }
    return type(model.__name__.removesuffix("Row") + "Row_", (Row,), namespace)


class _Table:
    """What the store knows of one table: its row class, SQL and value converters for one dialect."""

    def __init__(self, cls: type[Row], dialect: Dialect, capacity: int) -> None:
        self.cls = cls
        table = cls.__table__
        self.table = table
        self.capacity = capacity
        self.cache: OrderedDict[tuple, Any] = OrderedDict()
        self.keys: set[tuple] | None = None
        """Every key the table holds (None: not known, e.g. past :data:`KEY_INDEX_MAX`): a key not in it is absent
        without a query, so new rows (the most common miss: every insert checks first) cost no ``SELECT``."""
        self.columns = cls.__columns__
        self.key = cls.__key__
        self.key_index = tuple(self.columns.index(k) for k in self.key)
        self.select_keys = select(*(table.c[k] for k in self.key))
        key_where = [table.c[k] == bind(f"k_{k}") for k in self.key]
        self.select = select(*table.columns).where(*key_where)
        self.delete = delete(table).where(*key_where)
        self._updates: dict[tuple[int, ...], Any] = {}
        upsert = _UPSERTS.get(dialect.name)
        if upsert is not None:
            stmt = upsert(table)
            rest = {c: stmt.excluded[c] for c in self.columns if c not in self.key}
            self.insert = (
                stmt.on_conflict_do_update(index_elements=list(self.key), set_=rest)
                if rest
                else stmt.on_conflict_do_nothing()
            )
        else:  # another database: plain inserts (the store is the only writer, so a new key is absent)
            self.insert = table.insert()

    def update(self, changed: tuple[int, ...]) -> Any:
        stmt = self._updates.get(changed)
        if stmt is None:
            table = self.table
            stmt = self._updates[changed] = (
                update(table)
                .where(*[table.c[k] == bind(f"k_{k}") for k in self.key])
                .values({self.columns[i]: bind(f"v_{self.columns[i]}") for i in changed})
            )
        return stmt

    def load(self, record: Iterable[Any]) -> Row:
        """A row from a selected record (already converted by Core's result processors)."""
        row = self.cls.__new__(self.cls)
        for name, value in zip(self.columns, record, strict=True):
            if isinstance(value, datetime) and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)  # every stored time is UTC; SQLite gives it back naive
            object.__setattr__(row, name, value)
        row._saved = row.row_values()
        return row


class RowStore:
    """The rows of ``tables`` (row classes from :func:`rows`), cached in memory and written in batches.

    Use one batch at a time: :meth:`begin`, then :meth:`get` / :meth:`add` / :meth:`delete` /
    :meth:`insert_absent` (and :meth:`connection` after :meth:`flush` for a query inside the batch), then
    :meth:`commit` (or :meth:`rollback`). ``capacity``: rows kept per table between batches."""

    def __init__(
        self, engine: Engine, tables: Iterable[type[Row]], capacity: int = 5000, tracked: Iterable[type[Row]] = ()
    ) -> None:
        self.engine = engine
        self._tables = {cls: _Table(cls, engine.dialect, capacity) for cls in tables}
        self._tracked = frozenset(tracked)
        self.changes: list[tuple[type[Row], tuple, Row | None]] = []
        """After :meth:`commit`: ``(row class, key, copy of the row or None if deleted)`` for each changed row of
        a ``tracked`` table, in no particular order."""
        self._pending_changes: list[tuple[type[Row], tuple, Row | None]] = []
        self._indexed = False
        self._conn: Connection | None = None
        self._touched: dict[int, tuple[_Table, Row]] = {}
        self._new: dict[int, tuple[_Table, Row]] = {}
        self._deleted: list[tuple[_Table, tuple]] = []

    # ---- a batch ---------------------------------------------------------------------------------------------------

    def begin(self) -> Connection:
        """Open the batch's connection and transaction (the first one also reads every table's keys). Raises
        RuntimeError when a batch is already open."""
        if self._conn is not None:
            raise RuntimeError("a batch is already open")
        self._conn = self.engine.connect()
        self._conn.begin()
        if not self._indexed:
            for t in self._tables.values():
                keys = {tuple(r) for r in self._conn.execute(t.select_keys.limit(KEY_INDEX_MAX + 1))}
                t.keys = keys if len(keys) <= KEY_INDEX_MAX else None
            self._indexed = True
        return self._conn

    @property
    def connection(self) -> Connection:
        """The open batch's connection (for queries; call :meth:`flush` first so they see this batch's rows)."""
        if self._conn is None:
            raise RuntimeError("no batch is open")
        return self._conn

    def commit(self) -> None:
        """Write what changed and commit the transaction; then keep at most ``capacity`` rows per table."""
        conn = self.connection
        try:
            self.flush()
            conn.commit()
        except BaseException:
            self.rollback()
            raise
        conn.close()
        self._conn = None
        self.changes, self._pending_changes = self._pending_changes, []
        for t in self._tables.values():
            while len(t.cache) > t.capacity:
                t.cache.popitem(last=False)

    def rollback(self) -> None:
        """Abandon the batch: nothing it changed is written, and every cached row is forgotten."""
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()
                self._conn = None
        self._touched.clear()
        self._new.clear()
        self._deleted.clear()
        self._pending_changes.clear()
        self._indexed = False
        for t in self._tables.values():
            t.cache.clear()
            t.keys = None

    def __enter__(self) -> RowStore:
        self.begin()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # ---- rows ------------------------------------------------------------------------------------------------------

    def get(self, cls: type[Row], *key: Any) -> Any:
        """The row of ``cls`` with primary key ``key`` (one value per key column), or None. Changes made to it are
        written at the next :meth:`flush` / :meth:`commit`."""
        t = self._tables[cls]
        cached = t.cache.get(key, None)
        if cached is None and t.keys is not None and key not in t.keys:
            return None
        if cached is None:
            record = self.connection.execute(t.select, {f"k_{k}": v for k, v in zip(t.key, key, strict=True)}).first()
            cached = t.load(record) if record is not None else _ABSENT
            t.cache[key] = cached
        else:
            t.cache.move_to_end(key)
        if cached is _ABSENT:
            return None
        self._touched[id(cached)] = (t, cached)
        return cached

    def add(self, row: Row) -> None:
        """Insert ``row`` (a new row; one whose key exists is replaced), or mark a row of :meth:`get` changed (a
        no-op: changes are found by comparing values)."""
        t = self._tables[type(row)]
        key = row.row_key()
        cached = t.cache.get(key)
        if cached is row:
            self._touched[id(row)] = (t, row)
            return
        t.cache[key] = row
        self._new[id(row)] = (t, row)
        if t.keys is not None:
            t.keys.add(key)
        if cached is not None and cached is not _ABSENT:
            self._touched.pop(id(cached), None)
            self._new.pop(id(cached), None)

    def insert_absent(self, row: Row) -> bool:
        """Insert ``row`` unless a row with its key exists; returns whether it was inserted."""
        if self.get(type(row), *row.row_key()) is not None:
            return False
        self.add(row)
        return True

    def delete(self, row: Row) -> None:
        """Delete ``row`` (from :meth:`get`) at the next flush."""
        t = self._tables[type(row)]
        key = row.row_key()
        t.cache[key] = _ABSENT
        if t.keys is not None:
            t.keys.discard(key)
        self._touched.pop(id(row), None)
        if self._new.pop(id(row), None) is None or row._saved is not None:
            self._deleted.append((t, key))

    def cached(self, cls: type[Row]) -> Iterator[Any]:
        """The rows of ``cls`` held in memory now (not every row of the table)."""
        return (r for r in self._tables[cls].cache.values() if r is not _ABSENT)

    def flush(self) -> None:
        """Write the batch's changes so far on its connection (deletions, new rows, changed columns)."""
        conn = self.connection
        track = self._pending_changes.append if self._tracked else None
        for t, key in self._deleted:
            conn.execute(t.delete, {f"k_{k}": v for k, v in zip(t.key, key, strict=True)})
            if track is not None and t.cls in self._tracked:
                track((t.cls, key, None))
        self._deleted.clear()
        inserts: dict[_Table, list[dict[str, Any]]] = {}
        for t, row in self._new.values():
            values = row.row_values()
            inserts.setdefault(t, []).append(dict(zip(t.columns, values, strict=True)))
            row._saved = values
            if track is not None and t.cls in self._tracked:
                track((t.cls, row.row_key(), _copy(row, values)))
        self._new.clear()
        for t, params in inserts.items():
            conn.execute(t.insert, params)
        updates: dict[tuple[_Table, tuple[int, ...]], list[dict[str, Any]]] = {}
        for t, row in self._touched.values():
            values = row.row_values()
            saved = row._saved
            if values == saved:
                continue
            changed = tuple(i for i, (a, b) in enumerate(zip(values, saved, strict=True)) if a is not b and a != b)
            params = {f"k_{t.columns[i]}": saved[i] for i in t.key_index}
            for i in changed:
                params[f"v_{t.columns[i]}"] = values[i]
            updates.setdefault((t, changed), []).append(params)
            row._saved = values
            if track is not None and t.cls in self._tracked:
                track((t.cls, row.row_key(), _copy(row, values)))
        self._touched.clear()
        for (t, changed), params in updates.items():
            conn.execute(t.update(changed), params)


def _copy(row: Row, values: tuple) -> Row:
    """A detached copy of ``row`` with ``values`` (what was just written)."""
    copy = row.__class__.__new__(row.__class__)
    for name, value in zip(row.__columns__, values, strict=True):
        object.__setattr__(copy, name, value)
    copy._saved = values
    return copy


def load_position(store: RowStore, cls: type[Row], name: str) -> int:
    """The last stream sequence projection ``name`` applied (0: nothing yet), from its position row of ``cls`` (a
    table with ``name`` and ``last_sequence``); call inside a batch."""
    row = store.get(cls, name)
    return row.last_sequence if row is not None else 0  # type: ignore[attr-defined]


def save_position(store: RowStore, cls: type[Row], name: str, sequence: int) -> None:
    """Record ``sequence`` as applied by projection ``name``, in the batch's transaction."""
    row = store.get(cls, name)
    if row is None:
        store.add(cls(name=name, last_sequence=sequence))
    else:
        row.last_sequence = sequence  # type: ignore[attr-defined]

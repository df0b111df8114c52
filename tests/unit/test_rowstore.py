"""``hermes_proto.rowstore`` on a real SQLite file: what a batch writes is what an ORM session reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from hermes_proto import sqlstore
from hermes_proto.rowstore import RowStore, rows


class _Base(SQLModel, registry=registry()):
    pass


class ItemRow(_Base, table=True):
    __tablename__ = "items"

    item_id: str = Field(primary_key=True)
    status: str = "new"
    big: str = ""
    count: int = 0
    flag: bool = False
    at: datetime | None = None


class PairRow(_Base, table=True):
    __tablename__ = "pairs"

    a: str = Field(primary_key=True)
    b: int = Field(primary_key=True)
    value: float = 0.0


Item = rows(ItemRow)
Pair = rows(PairRow)
T0 = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path):
    engine = sqlstore.make_engine(f"sqlite:///{tmp_path / 'rs.db'}", _Base.metadata)
    yield engine
    engine.dispose()


def statements(engine) -> list[str]:
    seen: list[str] = []
    sa_event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2].split()[0]))
    return seen


def orm(engine, model, *key):
    with Session(engine) as s:
        row = s.get(model, key if len(key) > 1 else key[0])
        return None if row is None else row.model_dump()


def test_defaults_keys_and_equality() -> None:
    item = Item(item_id="x")
    assert (item.status, item.count, item.flag, item.at) == ("new", 0, False, None)
    assert item.row_key() == ("x",) and Pair(a="p", b=2).row_key() == ("p", 2)
    assert Item(item_id="x", count=1) == Item(item_id="x", count=1) != Item(item_id="x", count=2)
    with pytest.raises(TypeError):
        rows(object)


def test_batches_insert_update_and_delete_what_changed(engine) -> None:
    store = RowStore(engine, [Item, Pair])
    with store:
        store.add(Item(item_id="a", big="x" * 1000, at=T0))
        store.add(Item(item_id="b"))
        store.add(Pair(a="p", b=1, value=1.5))
        got = store.get(Item, "a")
        got.count = 3  # a change to a row added in the same batch is part of its insert
    assert orm(engine, ItemRow, "a") == dict(item_id="a", status="new", big="x" * 1000, count=3, flag=False, at=T0)
    assert orm(engine, PairRow, "p", 1)["value"] == 1.5

    seen = statements(engine)
    with store:
        item = store.get(Item, "a")  # cached: no SELECT
        item.status, item.at = "done", T0 + timedelta(hours=1)
        store.get(Item, "b").flag = True
        store.delete(store.get(Pair, "p", 1))
        assert store.get(Pair, "p", 1) is None
    # two UPDATE shapes (status+at, flag), one DELETE; the unchanged 1,000-character column is not written
    assert sorted(s for s in seen if s != "BEGIN") == ["DELETE", "UPDATE", "UPDATE"]
    assert orm(engine, ItemRow, "a")["status"] == "done" and orm(engine, ItemRow, "b")["flag"] is True
    assert orm(engine, PairRow, "p", 1) is None


def test_a_fresh_store_loads_from_the_file_and_knows_which_keys_are_absent(engine) -> None:
    with RowStore(engine, [Item]) as store:
        store.add(Item(item_id="a", count=7, at=T0))
    fresh = RowStore(engine, [Item])
    seen = statements(engine)
    with fresh:
        row = fresh.get(Item, "a")
        assert row.count == 7 and row.at == T0  # back as aware UTC
        assert fresh.get(Item, "nope") is None and fresh.get(Item, "nope") is None
        assert fresh.insert_absent(Item(item_id="a")) is False
        assert fresh.insert_absent(Item(item_id="n", count=1)) is True
    assert seen.count("SELECT") == 2  # the table's keys once at the first batch, then "a"; absent keys cost nothing
    assert orm(engine, ItemRow, "n")["count"] == 1


def test_past_the_key_index_limit_a_miss_reads_once(engine, monkeypatch) -> None:
    from hermes_proto import rowstore

    with RowStore(engine, [Item]) as store:
        store.add(Item(item_id="a"))
    monkeypatch.setattr(rowstore, "KEY_INDEX_MAX", 0)
    fresh = RowStore(engine, [Item])
    seen = statements(engine)
    with fresh:
        assert fresh.get(Item, "nope") is None and fresh.get(Item, "nope") is None
        assert fresh.get(Item, "a") is not None
    assert seen.count("SELECT") == 3  # the keys (too many: dropped), "nope" once (remembered), "a"


def test_rollback_writes_nothing_and_forgets_the_cache(engine) -> None:
    store = RowStore(engine, [Item])
    with store:
        store.add(Item(item_id="a", count=1))
    with pytest.raises(RuntimeError), store:
        store.get(Item, "a").count = 99
        store.add(Item(item_id="b"))
        raise RuntimeError("the batch fails")
    assert orm(engine, ItemRow, "a")["count"] == 1 and orm(engine, ItemRow, "b") is None
    with store:
        assert store.get(Item, "a").count == 1  # read again, not the abandoned 99


def test_capacity_evicts_least_recently_used_rows_after_commit(engine) -> None:
    store = RowStore(engine, [Item], capacity=2)
    with store:
        for name in "abc":
            store.add(Item(item_id=name))
    assert len(list(store.cached(Item))) == 2
    with store:
        assert store.get(Item, "a") is not None  # evicted, read back from the file
    with Session(engine) as s:
        assert len(s.exec(select(ItemRow)).all()) == 3


def test_replacing_a_deleted_key_in_one_batch(engine) -> None:
    store = RowStore(engine, [Item])
    with store:
        store.add(Item(item_id="a", count=1))
    with store:
        store.delete(store.get(Item, "a"))
        store.add(Item(item_id="a", count=2))
    assert orm(engine, ItemRow, "a")["count"] == 2


def test_tracked_tables_report_copies_of_what_changed(engine) -> None:
    store = RowStore(engine, [Item, Pair], tracked=[Item])
    with store:
        store.add(Item(item_id="a", count=1))
        store.add(Pair(a="p", b=1))
    assert [(cls, key, row.count) for cls, key, row in store.changes] == [(Item, ("a",), 1)]
    with store:
        store.get(Item, "a").count = 2
    ((_, _, copy),) = store.changes
    with store:
        store.get(Item, "a").count = 3  # the copy handed out before is not the cached row
        store.delete(store.get(Pair, "p", 1))
    assert copy.count == 2 and [c[2].count for c in store.changes] == [3]
    with store:
        store.delete(store.get(Item, "a"))
    assert store.changes == [(Item, ("a",), None)]
    with store:
        store.get(Item, "nope")
    assert store.changes == []

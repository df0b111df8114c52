"""Forgetting in the router's read model and dispatcher view: after ``PersonalDataForgotten`` no row of the forgotten
threads is left (prompts, error messages, selections, drafts, ratings) in any table, in the view, in the row store's
cache, or in the bytes of the SQLite file; a finished job not yet costed keeps only its accounting. The other user's
rows are exactly what applying their events alone gives, and the spend and backend statistics are kept."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hermes_proto import events as ev
from hermes_proto import subjects
from hermes_proto.base import ChatMessage, Event
from hermes_proto.codec import encode
from hermes_proto.forgetting import PersonalDataForgotten

from hermes_router import readmodel
from hermes_router.bootstrap import RouterProjection

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
SECRET = {"a": "xylophonealpha", "b": "banjobravo"}
"""A word only each user's texts hold (what the file's bytes are searched for)."""
PER_THREAD = ("router_jobs", "selections", "thread_drafts", "thread_ratings")
KEPT = ("backend_stats", "spend")


class _Log:
    """Events of one user's thread with unique ids and increasing times."""

    def __init__(self, u: str) -> None:
        self.u, self.thread, self.events = u, f"{u}-t", []

    def add(self, cls: type[Event], **fields) -> Event:
        n = len(self.events) + 1
        event = cls(
            event_id=f"{self.u}-e{n}",
            aggregate_id=self.thread,
            occurred_at=NOW + timedelta(seconds=n),
            correlation_id=self.thread,
            **fields,
        )
        self.events.append(event)
        return event


def _life(u: str) -> list[Event]:
    """One thread of user ``u``: a job completed, costed, presented and rated; one failed and abandoned; one still
    queued; one completed whose cost is not recorded yet."""
    log, w = _Log(u), SECRET[u]

    def queued(job: str) -> None:
        log.add(ev.JobQueued, job_id=job, kind="draft1", messages=[ChatMessage(role="user", content=f"plan {w}")])
        log.add(ev.BackendSelected, job_id=job, backend="talos", model="m", reason="best score")

    def completed(job: str) -> None:
        log.add(ev.ExecutionStarted, job_id=job, backend="talos", model="m")
        done = dict(text=f"draft {w}", prompt_tokens=30, completion_tokens=40, latency_ms=5.0)
        log.add(ev.ExecutionCompleted, job_id=job, backend="talos", model="m", **done)

    queued(f"{u}-d1")
    completed(f"{u}-d1")
    log.add(
        ev.CostRecorded,
        job_id=f"{u}-d1",
        backend="talos",
        model="m",
        prompt_tokens=30,
        completion_tokens=40,
        cost_cents=1.5,
    )
    log.add(ev.DraftPresented, job_id=f"{u}-d1", draft_number=1, text=f"draft {w}", backend="talos", model="m")
    log.add(ev.ThreadRated, rating=4, draft_number=1, comment=f"nice {w}")
    queued(f"{u}-d2")
    log.add(ev.ExecutionFailed, job_id=f"{u}-d2", backend="talos", model="m", error_code="bad", message=f"no {w}")
    log.add(ev.ExecutionAbandoned, job_id=f"{u}-d2", error_code="bad", message=f"gave up on {w}")
    log.add(ev.JobQueued, job_id=f"{u}-d3", kind="draft2", messages=[ChatMessage(role="user", content=f"more {w}")])
    queued(f"{u}-d4")
    completed(f"{u}-d4")
    return log.events


def _forget(user: str, keys: list[str], n: int = 0) -> PersonalDataForgotten:
    return PersonalDataForgotten(
        event_id=f"forget-{user}-{n}",
        aggregate_id=f"privacy-{user}",
        occurred_at=NOW + timedelta(hours=1),
        correlation_id="forget",
        user_id=user,
        key_ids=keys,
    )


def _project(path: Path, *batches: list[Event]) -> RouterProjection:
    """The router's projection over ``path`` after ``batches``, applied as the service does (write, then the view)."""
    projection = RouterProjection(readmodel.make_engine(f"sqlite:///{path}"), None)
    seq = projection.position + 1
    for events in batches:
        raw = [(seq + i, subjects.event_subject(e), encode(e)) for i, e in enumerate(events)]
        projection.apply_now(raw)
        asyncio.run(projection.stored(raw, []))
        seq += len(raw)
    return projection


def _rows(path: Path, names: tuple[str, ...]) -> dict[str, list[tuple]]:
    """Each table's rows, sorted (a job's ``queued_seq``, its place in the log, left out: logs differ)."""
    with sqlite3.connect(path) as db:
        db.row_factory = lambda cursor, row: tuple(
            v for (name, *_), v in zip(cursor.description, row, strict=True) if name != "queued_seq"
        )
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in names}


def _file_bytes(projection: RouterProjection, path: Path) -> bytes:
    projection.engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def test_the_forgotten_threads_rows_view_and_bytes_are_gone_and_the_others_stay(tmp_path: Path) -> None:
    a, b = _life("a"), _life("b")
    mixed = [e for pair in zip(a, b, strict=True) for e in pair]
    projection = _project(tmp_path / "r.db", mixed, [_forget("user-a", ["thread.a-t", "preference.x"])])
    for path, events in ((tmp_path / "b.db", b), (tmp_path / "all.db", mixed)):
        _project(path, events).engine.dispose()

    rows = _rows(tmp_path / "r.db", PER_THREAD + KEPT)
    [kept] = [r for r in rows["router_jobs"] if r[1] == "a-t"]  # the finished job its cost is still owed for
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.row_factory = sqlite3.Row
        job = dict(db.execute("SELECT * FROM router_jobs WHERE job_id = 'a-d4'").fetchone())
    assert kept[0] == "a-d4" and job["messages_json"] == "[]" and job["status"] == readmodel.DONE
    assert (job["prompt_tokens"], job["completion_tokens"], job["cost_recorded"]) == (30, 40, 0)
    others = {t: [r for r in rs if r[0] != "a-d4"] for t, rs in rows.items() if t in PER_THREAD}
    assert others == _rows(tmp_path / "b.db", PER_THREAD)  # b's rows, exactly
    assert {t: rows[t] for t in KEPT} == _rows(tmp_path / "all.db", KEPT)  # accounting kept

    view = projection.view
    assert set(view.jobs) == {"a-d4", "b-d3", "b-d4"}
    assert view.jobs["a-d4"].messages_json == "[]"
    cached = [list(projection.rows.cached(cls)) for cls in readmodel.ROWS]
    for memory in (repr(vars(view)), repr(cached)):
        assert SECRET["a"] not in memory and SECRET["b"] in memory

    data = _file_bytes(projection, tmp_path / "r.db")
    assert SECRET["a"].encode() not in data and SECRET["b"].encode() in data


def test_the_kept_job_is_costed_afterwards_and_goes_with_a_later_forget(tmp_path: Path) -> None:
    a = _life("a")
    cost = ev.CostRecorded(
        event_id="a-cost-d4",
        aggregate_id="a-t",
        occurred_at=NOW + timedelta(hours=2),
        correlation_id="a-t",
        job_id="a-d4",
        backend="talos",
        model="m",
        prompt_tokens=30,
        completion_tokens=40,
        cost_cents=2.0,
    )
    keys = ["thread.a-t"]
    projection = _project(tmp_path / "r.db", a, [_forget("user-a", keys)], [cost])
    rows = _rows(tmp_path / "r.db", PER_THREAD + KEPT)
    assert rows["selections"] == rows["thread_drafts"] == rows["thread_ratings"] == []
    [job] = rows["router_jobs"]
    assert job[0] == "a-d4" and "[]" in job and SECRET["a"] not in repr(job)
    assert sum(r[3] for r in rows["spend"]) == 3.5  # 1.5 before the forget, 2.0 for the kept job after it
    assert projection.view.jobs == {}  # costed: the dispatcher no longer follows it
    projection.engine.dispose()

    projection = _project(tmp_path / "r.db", [_forget("user-a", keys, 1)])  # e.g. a retention sweep later
    after = _rows(tmp_path / "r.db", PER_THREAD + KEPT)
    assert after == {**rows, "router_jobs": []}
    projection.engine.dispose()

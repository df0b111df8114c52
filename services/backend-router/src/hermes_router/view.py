"""The dispatcher's decision state in memory: the router's open and uncosted jobs, every backend's state and
statistics, spend per day, project and backend, and the budget alerts already raised.

It is loaded from the read model at start and then follows it: after each write the projection hands over copies of
the rows that changed (:attr:`hermes_proto.rowstore.RowStore.changes`), so a round reads memory, never SQLite, and
sees exactly what the rows hold (one implementation of the rules: :mod:`hermes_router.readmodel`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from hermes_router import readmodel
from hermes_router.readmodel import (
    CANCELLED,
    DISPATCHED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    BackendStateRow,
    BackendStatRow,
    BudgetAlertRow,
    RouterJobRow,
    SpendRow,
)

_IN_FLIGHT = (DISPATCHED, RUNNING)


def _follows(job: Any) -> bool:
    """A job the dispatcher still acts on: to place (queued, failed), in flight, or finished without a cost yet."""
    if job.status in (QUEUED, FAILED, DISPATCHED, RUNNING):
        return True
    return job.status in (DONE, CANCELLED) and job.completion_event_id is not None and not job.cost_recorded


@dataclass
class Snapshot:
    """What one round reads: open jobs (priority desc, then queue order), finished jobs without a recorded cost,
    per-backend rows, today's spend (cents, all and per project), jobs in flight per backend and the estimated
    cents they reserve (all and per project), and the budget alerts raised."""

    day: str
    jobs: list[Any]
    uncosted: list[Any]
    states: dict[str, Any]
    stats: dict[str, Any]
    spent_today: float
    project_spent: dict[str, float]
    in_flight: dict[str, int]
    reserved: float
    alerted: set[str] = field(default_factory=set)
    project_reserved: dict[str, float] = field(default_factory=dict)


class RouterView:
    """Rows by key, as the read model holds them (copies; never written to). Used on the event loop only."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}
        self.states: dict[str, Any] = {}
        self.stats: dict[str, Any] = {}
        self.spend: dict[tuple[str, str, str], float] = {}
        self.alerted: set[str] = set()

    @classmethod
    def load(cls, engine: Any) -> RouterView:
        """The view of the read model as stored (blocking: a few queries)."""
        view = cls()
        with Session(engine) as s:
            open_or_uncosted = col(RouterJobRow.status).in_((QUEUED, FAILED, DISPATCHED, RUNNING)) | (
                col(RouterJobRow.status).in_((DONE, CANCELLED))
                & col(RouterJobRow.completion_event_id).is_not(None)
                & col(RouterJobRow.cost_recorded).is_(False)
            )
            view.jobs = {r.job_id: _row(readmodel.Job, r) for r in s.exec(select(RouterJobRow).where(open_or_uncosted))}
            view.states = {r.backend: _row(readmodel.State, r) for r in s.exec(select(BackendStateRow))}
            view.stats = {r.backend: _row(readmodel.Stat, r) for r in s.exec(select(BackendStatRow))}
            view.spend = {(r.day, r.project, r.backend): r.cents for r in s.exec(select(SpendRow))}
            view.alerted = set(s.exec(select(BudgetAlertRow.aggregate_id)))
        return view

    def apply(self, changes: Iterable[tuple[type, tuple, Any]]) -> dict[str, Any]:
        """Take the rows a write changed; returns the changed jobs by id (as now stored)."""
        jobs: dict[str, Any] = {}
        for cls, key, row in changes:
            if cls is readmodel.Job:
                jobs[key[0]] = row
                if row is not None and _follows(row):
                    self.jobs[key[0]] = row
                else:
                    self.jobs.pop(key[0], None)
            elif cls is readmodel.State:
                self._put(self.states, key[0], row)
            elif cls is readmodel.Stat:
                self._put(self.stats, key[0], row)
            elif cls is readmodel.Spend:
                if row is None:
                    self.spend.pop(key, None)
                else:
                    self.spend[key] = row.cents
            elif cls is readmodel.Alert:
                if row is None:
                    self.alerted.discard(key[0])
                else:
                    self.alerted.add(key[0])
        return jobs

    @staticmethod
    def _put(table: dict[str, Any], key: str, row: Any) -> None:
        if row is None:
            table.pop(key, None)
        else:
            table[key] = row

    def snapshot(self, now: datetime) -> Snapshot:
        day = readmodel.day_of(now)
        waiting = sorted(
            (j for j in self.jobs.values() if j.status in (QUEUED, FAILED)), key=lambda j: (-j.priority, j.queued_seq)
        )
        uncosted = [j for j in self.jobs.values() if j.status in (DONE, CANCELLED)]
        in_flight: dict[str, int] = {}
        project_reserved: dict[str, float] = {}
        for j in self.jobs.values():
            if j.status in _IN_FLIGHT:
                in_flight[j.backend] = in_flight.get(j.backend, 0) + 1
            if j.status in _IN_FLIGHT or j.status in (DONE, CANCELLED):
                project_reserved[j.project] = project_reserved.get(j.project, 0.0) + j.estimated_cost_cents
        project_spent: dict[str, float] = {}
        for (spent_day, project, _), cents in self.spend.items():
            if spent_day == day:
                project_spent[project] = project_spent.get(project, 0.0) + cents
        return Snapshot(
            day,
            waiting,
            uncosted,
            dict(self.states),
            dict(self.stats),
            sum(project_spent.values()),
            project_spent,
            in_flight,
            sum(project_reserved.values()),
            set(self.alerted),
            project_reserved,
        )


def _row(cls: type, model: Any) -> Any:
    """A row object of ``cls`` with the values of an ORM ``model`` instance (times as aware UTC)."""
    row = cls(**{c: getattr(model, c) for c in cls.__columns__})
    for c in cls.__columns__:
        value = getattr(row, c)
        if isinstance(value, datetime) and value.tzinfo is None:
            setattr(row, c, readmodel.aware(value))
    return row


def read_snapshot(engine: Any, now: datetime) -> Snapshot:
    """The snapshot of the read model as stored (tests and tools; the dispatcher keeps a :class:`RouterView`)."""
    return RouterView.load(engine).snapshot(now)

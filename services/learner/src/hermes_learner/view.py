"""The learner's decision state in memory: every template (rows, askable ones, statistics and the recent counted
askings a trend reads), every user's preferences and patterns, and the recent threads (open ones and the last
``closed_capacity`` closed) with their questions and the causes already learned from.

It is loaded from the read model at start and then follows it: after each write the projection hands over copies of
the rows that changed (:attr:`hermes_proto.rowstore.RowStore.changes`), so a draft-1 decision and a close's
measurements read memory, never SQLite, and see exactly what the rows hold (one implementation of the rules:
:mod:`hermes_learner.readmodel`). A thread not held (closed long ago, or one whose rows arrived in an order the view
cannot vouch for) is read from SQLite (:func:`hermes_learner.queries.thread_facts`). Used on the event loop only.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto.queries import TemplateView

from hermes_learner import convert, patterns, preferences, queries
from hermes_learner.convert import HISTORY, ThreadFacts
from hermes_learner.domain import QuestionTemplate, TemplateStats
from hermes_learner.metrics import THREAD_READS
from hermes_learner.tables import (
    EffectivenessCause,
    Pattern,
    PatternEvidence,
    Preference,
    PreferenceEvidence,
    Question,
    Stats,
    Template,
    Thread,
)

Change = tuple[type, tuple, Any]
"""``(row class, primary key, copy of the row or None when deleted)``, as :attr:`RowStore.changes` lists them."""


@dataclass
class _Held:
    """One thread in memory: its row and what depends on it."""

    row: Any
    questions: dict[str, Any] = field(default_factory=dict)
    observed: bool = False
    effectiveness: set[tuple[str, str]] = field(default_factory=set)
    evidence: set[str] = field(default_factory=set)

    def facts(self) -> ThreadFacts:
        return ThreadFacts.of(self.row, self.questions.values(), self.observed, self.effectiveness, self.evidence)


@dataclass
class _History:
    """A template's latest :data:`HISTORY` counted askings as ``(closed_at, thread_id, position, question_id,
    answered)``, in the order :func:`hermes_learner.queries.answered_history` reads them."""

    tail: list[tuple[datetime, str, int, str, bool]] = field(default_factory=list)

    def add(self, entry: tuple[datetime, str, int, str, bool]) -> None:
        if len(self.tail) < HISTORY or entry > self.tail[0]:
            bisect.insort(self.tail, entry)
            del self.tail[:-HISTORY]

    def answered(self) -> list[bool]:
        return [e[4] for e in self.tail]


def _entry(q: Any) -> tuple[datetime, str, int, str, bool]:
    return q.closed_at, q.thread_id, q.position, q.question_id, q.answered_at is not None


class LearnerView:
    """Rows by key, as the read model holds them (copies; never written to), and the domain objects made of them."""

    def __init__(self, engine: Engine, closed_capacity: int = 2000) -> None:
        self.engine = engine
        self.closed_capacity = closed_capacity
        self._templates: dict[str, Any] = {}
        self._domain: dict[str, QuestionTemplate] = {}
        self._askable: list[QuestionTemplate] | None = None
        self._suggestions: dict[str, tuple[str, ...]] = {}
        self._stats: dict[str, TemplateStats] = {}
        self._history: dict[str, _History] = {}
        self._preferences: dict[str, dict[str, preferences.Preference]] = {}
        self._pref_users: dict[str, str] = {}
        self._patterns: dict[str, dict[str, patterns.Pattern]] = {}
        self._threads: dict[str, _Held] = {}
        self._closed: OrderedDict[str, None] = OrderedDict()
        self._untrusted: set[str] = set()
        """Threads some of whose rows changed while the thread was not held: never served from memory."""
        self._opened: Collection[str] = ()
        self._on = {
            Template: self._template,
            Stats: self._stat,
            Thread: self._thread,
            Question: self._question,
            Preference: self._preference,
            PreferenceEvidence: self._preference_evidence,
            Pattern: self._pattern,
            PatternEvidence: self._pattern_evidence,
            EffectivenessCause: self._effectiveness,
        }

    # ---- loading and following ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, engine: Engine, closed_capacity: int = 2000) -> LearnerView:
        """The view of the read model as stored (blocking: a few queries)."""
        view = cls(engine, closed_capacity)
        with Session(engine) as s:
            for table, where in (
                (Template, None),
                (Stats, None),
                (Preference, None),
                (Pattern, None),
                (Thread, Thread.__table__.c.closed.is_(False)),
            ):
                view.apply((table, None, r) for r in _rows(s, table, where))
            recent = (
                select(*Thread.__table__.columns)
                .where(Thread.__table__.c.closed.is_(True))
                .order_by(Thread.__table__.c.closed_at.desc())
                .limit(closed_capacity)
            )
            closed = [_row(Thread, r) for r in s.connection().execute(recent)]
            view._hold(reversed(closed))
            held = list(view._threads)
            for table in (Question, PatternEvidence, EffectivenessCause, PreferenceEvidence):  # what they hold
                for start in range(0, len(held), 500):
                    view.apply(
                        (table, None, r)
                        for r in _rows(s, table, table.__table__.c.thread_id.in_(held[start : start + 500]))
                    )
            view._history = _load_history(s)  # (replaces what the questions above counted)
        return view

    def replace(self, fresh: LearnerView) -> None:
        """Hold what ``fresh`` (a view loaded since) holds, dropping everything this one held: after a write that
        deleted rows in bulk (:mod:`hermes_learner.forgetting`), which :meth:`apply` does not follow."""
        on = self._on
        vars(self).update(vars(fresh))
        self._on = on

    def _hold(self, closed: Iterable[Any]) -> None:
        for row in closed:
            self._threads[row.thread_id] = _Held(row)
            self._closed[row.thread_id] = None

    def apply(self, changes: Iterable[Change], opened: Collection[str] = ()) -> None:
        """Take the rows a write changed (threads first: the rows of a thread it opened follow it); ``opened``: the
        threads whose rows it inserted. Not for a write that forgot rows: :meth:`replace` follows that one."""
        self._opened = opened
        for cls, key, row in sorted(changes, key=lambda c: c[0] is not Thread):
            self._on[cls](key, row)
        self._opened = ()

    def _template(self, key: tuple | None, row: Any) -> None:
        self._askable = None
        if row is None:
            for table in (self._templates, self._domain, self._suggestions):
                table.pop(key[0], None)  # type: ignore[index]
            return
        self._templates[row.template_id] = row
        self._domain[row.template_id] = convert.template(row)
        self._suggestions[row.template_id] = self._domain[row.template_id].suggestions

    def _stat(self, key: tuple | None, row: Any) -> None:
        if row is None:
            self._stats.pop(key[0], None)  # type: ignore[index]
        else:
            self._stats[row.template_id] = convert.stats(row)

    def _preference(self, key: tuple | None, row: Any) -> None:
        if row is None:
            user = self._pref_users.pop(key[0], None)  # type: ignore[index]
            self._preferences.get(user or "", {}).pop(key[0], None)  # type: ignore[index]
            return
        self._pref_users[row.preference_id] = row.user_id
        self._preferences.setdefault(row.user_id, {})[row.preference_id] = convert.preference(row)

    def _pattern(self, key: tuple | None, row: Any) -> None:
        if row is not None:  # patterns are never deleted
            self._patterns.setdefault(row.user_id, {})[row.pattern_id] = convert.pattern(row)

    def _thread(self, key: tuple | None, row: Any) -> None:
        if row is None:
            return  # threads are never deleted
        held = self._threads.get(row.thread_id)
        if held is not None:
            held.row = row
        elif row.thread_id in self._untrusted or (row.closed and row.thread_id not in self._opened):
            return  # a closed thread that left memory
        else:
            held = self._threads[row.thread_id] = _Held(row)
        if row.closed and row.thread_id not in self._closed:
            self._closed[row.thread_id] = None
            while len(self._closed) > self.closed_capacity:
                self._threads.pop(self._closed.popitem(last=False)[0], None)

    def _dependent(self, thread_id: str | None) -> _Held | None:
        """The held thread a dependent row belongs to; None (and the thread untrusted) when it is not held."""
        if thread_id is None:
            return None
        held = self._threads.get(thread_id)
        if held is None:
            self._untrusted.add(thread_id)
        return held

    def _question(self, key: tuple | None, row: Any) -> None:
        if row is None:
            return  # questions are never deleted
        held = self._dependent(row.thread_id)
        if held is not None:
            held.questions[row.question_id] = row
        if row.closed_at is not None:  # counted at its thread's close, in that write: it never changes after
            self._history.setdefault(row.template_id, _History()).add(_entry(row))

    def _pattern_evidence(self, key: tuple | None, row: Any) -> None:
        held = self._dependent(row.thread_id) if row is not None else None
        if held is not None:
            held.observed = True

    def _effectiveness(self, key: tuple | None, row: Any) -> None:
        held = self._dependent(row.thread_id) if row is not None else None
        if held is not None:
            held.effectiveness.add((row.cause_id, row.cause))

    def _preference_evidence(self, key: tuple | None, row: Any) -> None:
        held = self._dependent(row.thread_id) if row is not None else None
        if held is not None:
            held.evidence.add(row.cause_id)

    # ---- reading -----------------------------------------------------------------------------------------------

    def held_facts(self, thread_id: str) -> ThreadFacts | None:
        """What memory knows of ``thread_id``; None when it does not hold it (unknown, or read from SQLite)."""
        held = self._threads.get(thread_id)
        return held.facts() if held is not None else None

    async def facts(self, thread_id: str) -> ThreadFacts | None:
        """What a decision knows of ``thread_id`` (None: unknown); a thread not held is read from SQLite."""
        found = self.held_facts(thread_id)
        THREAD_READS.labels("memory" if found is not None else "sqlite").inc()
        if found is not None:
            return found
        return await asyncio.to_thread(self._read_facts, thread_id)

    def _read_facts(self, thread_id: str) -> ThreadFacts | None:
        with Session(self.engine) as session:
            return queries.thread_facts(session, thread_id)

    def askable_templates(self) -> list[QuestionTemplate]:
        """The templates that may be asked (active, not drafts), ordered by id."""
        if self._askable is None:
            self._askable = [self._domain[t] for t in sorted(self._templates) if convert.askable(self._templates[t])]
        return self._askable

    def stats(self) -> Mapping[str, TemplateStats]:
        return self._stats

    def suggestions(self) -> Mapping[str, Sequence[str]]:
        """Every template's suggestions, by id (drafts and deactivated ones too)."""
        return self._suggestions

    def template_view(self, template_id: str) -> TemplateView | None:
        """As :func:`hermes_learner.queries.template_view`."""
        row = self._templates.get(template_id)
        if row is None:
            return None
        history = self._history.get(template_id)
        return convert.template_view(
            row, self._stats.get(template_id, TemplateStats()), history.answered() if history is not None else []
        )

    def preferences(self, user_id: str) -> list[preferences.Preference]:
        """``user_id``'s preferences (expired ones too), ordered by category and key."""
        return sorted(self._preferences.get(user_id, {}).values(), key=lambda p: (p.category, p.key))

    def patterns(self, user_id: str) -> list[patterns.Pattern]:
        """``user_id``'s learned patterns, ordered by idea type, category and kind."""
        return sorted(self._patterns.get(user_id, {}).values(), key=lambda p: (p.idea_type, p.category, p.kind))


def _rows(session: Session, cls: type, where: Any) -> list[Any]:
    statement = select(*cls.__table__.columns)
    if where is not None:
        statement = statement.where(where)
    return [_row(cls, r) for r in session.connection().execute(statement)]


def _row(cls: type, record: Any) -> Any:
    """A row object of ``cls`` from a selected record (times as aware UTC: SQLite gives them back naive)."""
    return cls(
        **{c: convert.utc(v) if isinstance(v, datetime) else v for c, v in zip(cls.__columns__, record, strict=True)}
    )


def _load_history(session: Session) -> dict[str, _History]:
    """Per template, its latest :data:`HISTORY` counted askings (an index walk each)."""
    t = Question.__table__
    latest = (
        select(t.c.closed_at, t.c.thread_id, t.c.position, t.c.question_id, t.c.answered_at)
        .where(t.c.template_id == bindparam("template_id"), t.c.closed_at.is_not(None))
        .order_by(t.c.closed_at.desc(), t.c.thread_id.desc(), t.c.position.desc(), t.c.question_id.desc())
        .limit(HISTORY)
    )
    conn = session.connection()
    history: dict[str, _History] = {}
    for template_id in conn.execute(select(t.c.template_id).distinct()).scalars().all():
        tail = sorted(
            (convert.utc(r.closed_at), r.thread_id, r.position, r.question_id, r.answered_at is not None)
            for r in conn.execute(latest, {"template_id": template_id})
        )
        if tail:
            history[template_id] = _History(tail)
    return history

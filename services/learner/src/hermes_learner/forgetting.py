"""Forgetting in the learner's read model (:class:`~hermes_proto.forgetting.PersonalDataForgotten`): the rows of the
threads, preferences and patterns it names and, when it names a user, every such row of that user, with what hangs
off them: the threads' questions and answers, the evidence rows and the template effectiveness causes naming them.

Kept: the question templates (shared; a learned draft needs its phrase in several threads' answers) and
``template_stats`` (counts and sums, no text). The engine zeroes deleted bytes (``PRAGMA secure_delete``,
:func:`hermes_proto.sqlstore.make_engine`); the decisions' view is loaded again after such a write
(:class:`hermes_learner.projection.LearnerProjection`).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from hermes_proto.forgetting import PersonalDataForgotten, forgotten_aggregates
from hermes_proto.rowstore import Row, RowStore

from hermes_learner.tables import (
    EffectivenessCause,
    Pattern,
    PatternEvidence,
    Preference,
    PreferenceEvidence,
    Question,
    Thread,
)

CHUNK = 500
"""Ids per ``IN (...)`` query (SQLite allows 32766 variables; small chunks keep each statement cheap)."""


def forget_rows(store: RowStore, event: PersonalDataForgotten) -> None:
    """Delete, in the open batch of ``store``, every row ``event`` forgets (module docstring). Raises what the
    database raises."""
    named = forgotten_aggregates(event)
    threads = named.get("thread", set()) | owned(store, Thread, event.user_id)
    prefs = named.get("preference", set()) | owned(store, Preference, event.user_id)
    patterns = named.get("pattern", set()) | owned(store, Pattern, event.user_id)
    for cls, column, ids in (
        (Question, "thread_id", threads),
        (PreferenceEvidence, "thread_id", threads),
        (PreferenceEvidence, "preference_id", prefs),
        (PatternEvidence, "thread_id", threads),
        (PatternEvidence, "pattern_id", patterns),
        (EffectivenessCause, "thread_id", threads),
        (Thread, "thread_id", threads),
        (Preference, "preference_id", prefs),
        (Pattern, "pattern_id", patterns),
    ):
        delete_where(store, cls, column, ids)


def owned(store: RowStore, cls: type[Row], user_id: str) -> set[str]:
    """The keys (single-column) of ``cls``'s rows whose ``user_id`` is ``user_id``; none for ``""``."""
    if not user_id:
        return set()
    store.flush()
    table = cls.__table__
    key = table.c[cls.__key__[0]]
    return set(store.connection.execute(select(key).where(table.c.user_id == user_id)).scalars())


def delete_where(store: RowStore, cls: type[Row], column: str, values: Iterable[str]) -> int:
    """Delete (through ``store``, so its cache forgets them too) the rows of ``cls`` whose ``column`` is one of
    ``values``; returns how many."""
    table = cls.__table__
    keys = [table.c[k] for k in cls.__key__]
    ordered = sorted(values)
    deleted = 0
    store.flush()  # the query must see the rows this batch added
    for start in range(0, len(ordered), CHUNK):
        found = store.connection.execute(select(*keys).where(table.c[column].in_(ordered[start : start + CHUNK])))
        for key in found.all():
            row = store.get(cls, *key)
            if row is not None:
                store.delete(row)
                deleted += 1
    return deleted

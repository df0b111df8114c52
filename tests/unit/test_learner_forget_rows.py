"""Forgetting in the learner's read model and in-memory view: after ``PersonalDataForgotten`` nothing of the
forgotten aggregates (and user) is left in any table, in the decisions' view, in the row store's cache, or in the
bytes of the SQLite file; the other user's rows are exactly what applying their events alone gives."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hermes_proto import events as ev
from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.codec import encode
from hermes_proto.forgetting import PersonalDataForgotten

from hermes_learner import tables
from hermes_learner.projection import LearnerProjection
from hermes_learner.view import LearnerView

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
SECRET = {"a": "xylophonealpha", "b": "banjobravo"}
"""A word only each user's texts hold (what the file's bytes are searched for)."""
PER_USER = (
    "threads",
    "proposed_questions",
    "user_preferences",
    "preference_evidence",
    "learned_patterns",
    "pattern_evidence",
    "template_effectiveness_causes",
)


def _life(u: str) -> tuple[list[Event], list[str]]:
    """Two threads of user ``u`` (asked, answered, closed, rated), a learned preference and pattern; their key ids."""
    w, user, events = SECRET[u], f"user-{u}", []

    def add(cls: type[Event], aggregate_id: str, **fields) -> Event:
        n = len(events) + 1
        event = cls(
            event_id=f"{u}-e{n}",
            aggregate_id=aggregate_id,
            occurred_at=NOW + timedelta(seconds=n),
            correlation_id=aggregate_id,
            **fields,
        )
        events.append(event)
        return event

    pref = ev.preference_id(user, "constraint", "budget")
    pattern = f"{u}-pattern"
    for t in (f"{u}-t1", f"{u}-t2"):
        add(ev.ThreadOpened, t, idea=f"plan my {w} garden", user_id=user, max_questions=2)
        question = ev.Question(question_id=f"{t}-q", template_id="scope-size", category="scope", text=f"how big {w}?")
        add(ev.QuestionsProposed, t, questions=[question], idea_type="planning", clarity=0.3)
        answers = add(ev.AnswersRecorded, t, answers=[ev.Answer(question_id=question.question_id, text=f"tiny {w}")])
        add(
            ev.PreferenceLearned,
            pref,
            causation_id=answers.event_id,
            user_id=user,
            category="constraint",
            key="budget",
            value=f"under 50 {w}",
            votes={f"under 50 {w}": 1.0},
            confidence=0.8,
            stability=1.0,
            observations=1,
            source="observed",
            evidence="answer",
            thread_id=t,
            wordings={f"under 50 {w}": f"fifty euros {w}"},
            question=f"how big {w}?",
        )
        closed = add(ev.ThreadCompleted, t, final_draft_number=1, reason="answered")
        add(
            ev.PatternValidated,
            pattern,
            causation_id=closed.event_id,
            user_id=user,
            kind="recurring_answer",
            idea_type="planning",
            category="scope",
            outcome="success",
            validation_count=1,
            success_count=1,
            confidence=0.6,
            values={f"tiny {w}": 1},
            recommended_actions=[f"assume:scope=tiny {w}"],
            thread_id=t,
        )
        add(
            ev.TemplateEffectivenessUpdated,
            "scope-size",
            causation_id=closed.event_id,
            cause="thread_closed",
            thread_id=t,
            times_asked=1,
            times_answered=1,
            expected_improvement=0.5,
        )
        add(ev.ThreadRated, t, rating=4, draft_number=1)
    keys = [f"thread.{u}-t1", f"thread.{u}-t2", f"preference.{pref}", f"pattern.{pattern}"]
    return events, keys


def _raw(events: list[Event], first: int) -> list[tuple[int, str, bytes]]:
    return [(first + i, subjects.event_subject(e), encode(e)) for i, e in enumerate(events)]


def _project(path: Path, *batches: list[Event]) -> LearnerProjection:
    """A projection over the database at ``path`` after applying ``batches`` as the service does (write, then
    the view follows)."""
    projection = LearnerProjection(tables.make_engine(f"sqlite:///{path}"), None)
    seq = projection.position + 1
    for events in batches:
        raw = _raw(events, seq)
        projection.apply_now(raw)
        asyncio.run(projection.stored(raw, []))
        seq += len(raw)
    return projection


def _rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as db:
        return {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in PER_USER}


def _file_bytes(projection: LearnerProjection, path: Path) -> bytes:
    projection.engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL's frames into the file (and the WAL emptied)
    return path.read_bytes()


def _forget(user: str, keys: list[str], reason: str = "user_request") -> PersonalDataForgotten:
    return PersonalDataForgotten(
        event_id=f"forget-{user}-{reason}",
        aggregate_id=f"privacy-{user}",
        occurred_at=NOW + timedelta(hours=1),
        correlation_id="forget",
        user_id=user,
        key_ids=keys,
        reason=reason,
    )


def test_a_users_rows_view_and_bytes_are_gone_and_the_others_stay(tmp_path: Path) -> None:
    a, a_keys = _life("a")
    b, _ = _life("b")
    mixed = [e for pair in zip(a, b, strict=True) for e in pair]
    projection = _project(tmp_path / "l.db", mixed, [_forget("user-a", a_keys)])
    alone = _project(tmp_path / "b.db", b)

    assert _rows(tmp_path / "l.db") == _rows(tmp_path / "b.db")  # only b's rows, exactly
    view = projection.view
    assert view.preferences("user-a") == [] and view.patterns("user-a") == []
    assert view.held_facts("a-t1") is None and asyncio.run(view.facts("a-t2")) is None
    assert view.preferences("user-b") == alone.view.preferences("user-b") != []
    assert view.patterns("user-b") == alone.view.patterns("user-b") != []
    assert view.held_facts("b-t1") == alone.view.held_facts("b-t1") is not None
    cached = [list(projection.rows.cached(cls)) for cls in tables.ROWS]
    for memory in (repr(vars(view)), repr(cached)):
        assert SECRET["a"] not in memory and SECRET["b"] in memory

    alone.engine.dispose()
    data = _file_bytes(projection, tmp_path / "l.db")
    assert SECRET["a"].encode() not in data and SECRET["b"].encode() in data


def test_a_user_forget_finds_rows_by_user_and_is_idempotent(tmp_path: Path) -> None:
    """The event names no key of the user (keys created without an owner): the rows are found by ``user_id``; the
    threads' questions and evidence go with them. Applying it again changes nothing."""
    a, _ = _life("a")
    b, _ = _life("b")
    projection = _project(tmp_path / "l.db", a + b, [_forget("user-a", [])], [_forget("user-a", [], "again")])
    _project(tmp_path / "b.db", b).engine.dispose()
    assert _rows(tmp_path / "l.db") == _rows(tmp_path / "b.db")
    assert SECRET["a"].encode() not in _file_bytes(projection, tmp_path / "l.db")


def test_retention_of_threads_keeps_the_users_preferences_and_patterns(tmp_path: Path) -> None:
    """A retention sweep (no user) of thread keys deletes those threads and what hangs off them, nothing else."""
    a, _ = _life("a")
    projection = _project(tmp_path / "l.db", a, [_forget("", ["thread.a-t1"], "retention:thread")])
    rows = _rows(tmp_path / "l.db")
    assert [r[0] for r in rows["threads"]] == ["a-t2"]
    assert {r[1] for r in rows["proposed_questions"]} == {"a-t2"}
    assert {r[0] for r in rows["pattern_evidence"]} == {"a-t2"}
    assert {r[2] for r in rows["preference_evidence"]} == {"a-t2"}
    assert len(rows["user_preferences"]) == 1 and len(rows["learned_patterns"]) == 1
    assert projection.view.held_facts("a-t1") is None and projection.view.held_facts("a-t2") is not None
    fresh = LearnerView.load(projection.engine)
    assert projection.view.preferences("user-a") == fresh.preferences("user-a") != []
    projection.engine.dispose()

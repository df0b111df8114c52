"""Learned patterns as pure functions: the confidence (rule of succession), what counts as an answer, skip and
recurring-answer validation (with a value that flips), the threshold and minimum-validations gate, how a decision
skips or assumes (a preference beats a pattern), what optimize settles, answers Hermes supplied being no evidence, and
the read model built from the log (a rebuild gives identical rows)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.codec import decode_event, encode
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    Assumption,
    PatternValidated,
    Question,
    QuestionsProposed,
    ThreadCompleted,
    ThreadOpened,
    pattern_id,
)
from hermes_proto.facts import UNANSWERED
from hermes_proto.ids import derived_id, new_id

from hermes_learner import patterns, preferences, queries, readmodel, tables
from hermes_learner.learning import pattern_validations
from hermes_learner.patterns import Asked, Pattern, answered, observe, real_answer, validate
from hermes_learner.policies import PatternPolicy
from hermes_learner.preferences import Preference, learn

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
IDEA = "help me plan a trip"
SKIP, RECURRING = "skip_question", "recurring_answer"


def test_confidence_is_the_rule_of_succession():
    p = Pattern("local", SKIP, "planning", "context")
    steps = [p.confidence()]
    for _ in range(4):
        p = validate(p, success=True)
        steps.append(p.confidence())
    assert steps == [0.5, 0.6667, 0.75, 0.8, 0.8333]  # (s + 1) / (n + 2)
    assert validate(p, success=False).confidence() == round(5 / 7, 4)
    assert p.recommended_actions() == ["skip_category:context"]
    assert (
        p.pattern_id
        == pattern_id("local", SKIP, "planning", "context")
        != pattern_id("local", SKIP, "coding", "context")
    )


@pytest.mark.parametrize(
    ("text", "real"),
    [
        (None, False),
        ("", False),
        ("   ", False),
        ("not sure", False),
        ("Not sure.", False),
        ("I'm not sure!", False),
        ("no idea", False),
        ("I don't know", False),
        ("idk", False),
        ("n/a", False),
        ("skip", False),
        ("?", False),
        ("whatever", False),
        ("keep it simple", True),
        ("I don't know the options yet", True),
        ("No target", True),
        ("Nothing special", True),
    ],
)
def test_what_counts_as_an_answer(text, real):
    assert real_answer(text) is real


def test_a_thread_that_leaves_a_category_unanswered_confirms_its_skip_pattern():
    asked = [Asked("context", None), Asked("context", "not sure"), Asked("scope", "Quick first version!")]
    changes = {(p.kind, p.category): (p, outcome) for p, outcome in observe("local", "planning", asked, {})}
    assert set(changes) == {(SKIP, "context"), (SKIP, "scope"), (RECURRING, "scope")}
    skip, outcome = changes[(SKIP, "context")]
    assert (skip.validation_count, skip.success_count, outcome) == (1, 1, "success")
    skip, outcome = changes[(SKIP, "scope")]
    assert (skip.validation_count, skip.success_count, outcome) == (1, 0, "failure")
    seeded, outcome = changes[(RECURRING, "scope")]  # the first answer has nothing to be checked against
    assert (seeded.validation_count, seeded.values, seeded.value(), outcome) == (
        0,
        {"quick first version": 1},
        "quick first version",
        "seeded",
    )


def test_recurring_answers_succeed_fail_and_the_value_flips():
    p = Pattern("local", RECURRING, "planning", "constraint")
    outcomes = []
    for answer in (
        "keep it simple",
        "Keep it  simple.",
        "make it fancy",
        "make it fancy",
        "make it fancy",
        "make it fancy",
    ):
        p, outcome = answered(p, [patterns.normalize(answer)])
        outcomes.append((outcome, p.value()))
    assert outcomes == [
        ("seeded", "keep it simple"),
        ("success", "keep it simple"),
        ("failure", "keep it simple"),
        ("failure", "keep it simple"),
        ("failure", "make it fancy"),  # the 2-2 tie predicted the smaller value; now 3-2
        ("success", "make it fancy"),
    ]  # predicted and confirmed (now 4-2)
    assert (p.validation_count, p.success_count, p.values) == (5, 2, {"keep it simple": 2, "make it fancy": 4})
    assert p.recommended_actions() == ["assume:constraint=make it fancy"]
    both, outcome = answered(p, ["make it fancy", "something else"])  # every answer of the thread must match
    assert outcome == "failure" and both.values["something else"] == 1


def test_a_pattern_applies_only_confident_and_tested_enough():
    p = Pattern("local", SKIP, "planning", "context")
    for expected in (False, False, True):  # 0.6667, 0.75, 0.8 with 1, 2, 3 validations
        p = validate(p, success=True)
        assert p.usable(0.8, 3) is expected
    two = validate(validate(Pattern("local", SKIP, "planning", "context"), True), True)
    assert two.confidence() >= 0.7 and not two.usable(0.7, 3) and two.usable(0.7, 2)
    assert not validate(validate(validate(p, False), False), False).usable(0.8, 3)  # 4 / 8
    no_value = Pattern("local", RECURRING, "planning", "context", validation_count=9, success_count=9)
    assert not no_value.usable(0.8, 3) and no_value.recommended_actions() == []
    assert PatternPolicy(threshold=0.8, min_validations=3).usable([two, p]) == [p]


def _recurring(category: str, value: str, times: int = 4, idea_type: str = "planning") -> Pattern:
    p = Pattern("local", RECURRING, idea_type, category)
    for _ in range(times):
        p, _ = answered(p, [value])
    return p


def _skip(category: str, times: int = 3, idea_type: str = "planning") -> Pattern:
    p = Pattern("local", SKIP, idea_type, category)
    for _ in range(times):
        p = validate(p, success=True)
    return p


def test_optimize_settles_open_questions_by_their_slot():
    depth = Preference("local", "depth", "depth")
    for _ in range(3):
        depth = learn(depth, "answer", "detailed", NOW, timedelta(days=180))
    left = Preference("local", "fact", "result")
    for _ in range(3):
        left = learn(left, "answer", UNANSWERED, NOW, timedelta(days=180))
    known = preferences.known_slots([depth, left], ("",), 0.75, NOW)
    found = patterns.optimizations(
        [("q1", "scope", "depth"), ("q2", "intent", "result"), ("q3", "context", "audience")], known
    )
    assert [(o.kind, o.question_id, o.answer) for o in found] == [
        ("preference", "q1", "detailed"),
        ("skip_question", "q2", None),
    ]
    assert found[0].source_id == depth.preference_id and found[0].confidence == 0.75
    assert "leaves result unanswered" in found[1].reason


def test_answers_hermes_supplied_are_no_evidence():
    asked = [Asked("constraint", "keep it simple", assumed=True), Asked("context", None), Asked("intent", "a plan")]
    changes = [(p.kind, p.category) for p, _ in observe("local", "planning", asked, {})]
    # Hermes stopped waiting for the context answer, so its silence says nothing; the user's own answer counts.
    assert changes == [(RECURRING, "intent")]


def _env(aggregate: str, at: datetime, **extra) -> dict:
    return dict(event_id=new_id(), aggregate_id=aggregate, occurred_at=at, correlation_id=aggregate, **extra)


def _thread(number: int, answers: dict[str, str], assumed: bool = False) -> list:
    """One closed thread of the simulated user: it asks context, constraint and intent; ``answers`` by category."""
    thread, at = f"thread-{number}", NOW + timedelta(minutes=10 * number)
    questions = [
        Question(question_id=f"{thread}-{c}", template_id=t, category=c, text="?")
        for c, t in (
            ("context", "context-audience"),
            ("constraint", "constraint-budget"),
            ("intent", "intent-main-result"),
        )
    ]
    log = [
        ThreadOpened(**_env(thread, at), idea=IDEA),
        QuestionsProposed(
            **_env(thread, at + timedelta(seconds=5)), questions=questions, idea_type="planning", clarity=0.2
        ),
    ]
    given = [Answer(question_id=f"{thread}-{c}", text=t, assumed=assumed) for c, t in answers.items()]
    if given:
        log.append(AnswersRecorded(**_env(thread, at + timedelta(seconds=30)), answers=given))
    return log + [ThreadCompleted(**_env(thread, at + timedelta(seconds=60)), final_draft_number=2, reason="answered")]


def _learn(engine, log: list, policy: PatternPolicy) -> list:
    """Apply each thread's events, then what the learner's reactor appends on its close (as the service does)."""

    def validations(event: ThreadCompleted) -> list:
        with Session(engine) as session:
            facts = queries.thread_facts(session, event.aggregate_id)
            held = queries.load_patterns(session, facts.user_id) if facts is not None else []
        return pattern_validations(event, facts, held, policy)

    out = []
    for event in log:
        readmodel.apply_batch(engine, [(len(out) + 1, subjects.event_subject(event), encode(event))])
        out.append(event)
        if isinstance(event, ThreadCompleted):
            for validated in validations(event):
                readmodel.apply_batch(engine, [(len(out) + 1, subjects.event_subject(validated), encode(validated))])
                out.append(validated)
            assert validations(event) == []  # a redelivered close changes nothing twice
    return out


def _rows(path) -> dict:
    with sqlite3.connect(path) as db:
        return {
            t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("learned_patterns", "pattern_evidence", "proposed_questions", "template_stats")
        }


def test_patterns_are_the_log_and_rebuild_identically(tmp_path):
    log = [e for n in range(4) for e in _thread(n, {"constraint": "Keep it simple", "intent": f"option {n}"})]
    log += _thread(4, {"constraint": "keep it simple", "intent": "a plan"}, assumed=True)  # optimize's answers
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'live.db'}")
    policy = PatternPolicy(threshold=0.8, min_validations=3)
    full = _learn(engine, log, policy)
    validated = [e for e in full if isinstance(e, PatternValidated)]
    assert {e.thread_id for e in validated} == {f"thread-{n}" for n in range(4)}  # nothing from thread 4
    assert all(decode_event(encode(e)) == e for e in validated)
    first = validated[0]
    assert first.event_id == derived_id(first.causation_id, "pattern_validated", first.aggregate_id)
    with Session(engine) as session:
        views = {(v.kind, v.category): v for v in queries.pattern_views(session, "local", False, 0.8, 3)}
        applied = queries.pattern_views(session, None, True, 0.8, 3)
        loaded = queries.load_patterns(session, "local")
    engine.dispose()
    skip, same = views[(SKIP, "context")], views[(RECURRING, "constraint")]
    assert (skip.validation_count, skip.success_count, skip.confidence, skip.applied) == (4, 4, 0.8333, True)
    assert (same.validation_count, same.success_count, same.values, same.value, same.applied) == (
        3,
        3,
        {"keep it simple": 4},
        "keep it simple",
        True,
    )
    assert same.recommended_actions == ["assume:constraint=keep it simple"]
    varied = views[(RECURRING, "intent")]
    assert (varied.validation_count, varied.success_count, varied.applied) == (3, 0, False)
    assert views[(SKIP, "constraint")].success_count == 0
    assert {(v.kind, v.category) for v in applied} == {(SKIP, "context"), (RECURRING, "constraint")}
    assert {p.pattern_id for p in loaded} == {v.pattern_id for v in views.values()}

    # Rebuilding from the log (the reactor's events included) gives the same rows.
    replay = tables.make_engine(f"sqlite:///{tmp_path / 'replay.db'}")
    readmodel.apply_batch(replay, [(i, subjects.event_subject(e), encode(e)) for i, e in enumerate(full, 1)])
    replay.dispose()
    live_rows, replay_rows = _rows(tmp_path / "live.db"), _rows(tmp_path / "replay.db")
    assert live_rows == replay_rows
    assert len(live_rows["learned_patterns"]) == 5 and len(live_rows["pattern_evidence"]) == 5 * 4
    # Optimize's answers are not the user's: thread 4's questions are left out of the template statistics.
    stats = {row[0]: row[1:3] for row in live_rows["template_stats"]}
    assert stats["constraint-budget"] == (4, 4) and stats["context-audience"] == (5, 0)


def test_old_assumptions_and_answers_still_decode():
    old = msgspec.json.encode(
        {"preference_id": "p1", "category": "depth", "key": "depth", "value": "detailed", "confidence": 0.8}
    )
    assumption = msgspec.json.decode(old, type=Assumption)
    assert (assumption.source, assumption.pattern_id, assumption.preference_id) == ("preference", None, "p1")
    assert msgspec.json.decode(b'{"question_id": "q", "text": "t"}', type=Answer).assumed is False

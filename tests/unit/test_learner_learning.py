"""The learner's decisions as pure functions of what it knows of a thread (no database, no bus), its handler map and
its timers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobFailed,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
    preference_id,
)

from hermes_learner import evidence, handlers, learning, preferences
from hermes_learner.bootstrap import REACTION_EVENTS
from hermes_learner.convert import ThreadFacts
from hermes_learner.patterns import Pattern
from hermes_learner.policies import PatternPolicy, PreferencePolicy
from hermes_learner.tables import Question as QuestionRow
from hermes_learner.timers import Timers

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
ENV = dict(aggregate_id="t", occurred_at=T0, correlation_id="t")


def question(n: int, template_id: str, answer: str | None = None, assumed: bool = False) -> object:
    closed = T0 if not assumed else None
    return QuestionRow(
        question_id=f"q{n}",
        thread_id="t",
        position=n,
        template_id=template_id,
        category="scope",
        answer=answer,
        assumed=assumed,
        answered_at=T0 if answer and not assumed else None,
        closed_at=closed,
    )


def facts(**changes: object) -> ThreadFacts:
    base = dict(
        thread_id="t",
        user_id="ann",
        idea="plan a garden",
        max_questions=3,
        idea_type="planning",
        proposed=False,
        closed=False,
        assumptions=(),
    )
    return ThreadFacts(**{**base, **changes})  # type: ignore[arg-type]


def test_why_a_draft_is_not_decided_on() -> None:
    assert learning.skip_reason(None) == "unknown_thread"
    assert learning.skip_reason(facts(proposed=True, max_questions=0)) == "already_proposed"
    assert learning.skip_reason(facts(max_questions=0, closed=True)) == "max_questions_zero"
    assert learning.skip_reason(facts(closed=True)) == "thread_closed"
    assert learning.skip_reason(facts()) is None


def test_what_a_close_and_a_rating_measure_once() -> None:
    asked = (
        question(0, "scope-size", "small"),
        question(1, "scope-focus", "x", assumed=True),
        question(2, "scope-size"),
    )
    close = ThreadCompleted(event_id="c", **ENV, final_draft_number=2, reason="answered")
    rating = ThreadRated(event_id="r", **ENV, rating=4, draft_number=2)
    one = facts(questions=asked, closed=True)
    assert learning.to_measure(close, one) == ["scope-size"]  # Hermes's own answer says nothing of its template
    assert learning.to_measure(rating, one) == ["scope-focus", "scope-size"]
    measured = facts(questions=asked, closed=True, effectiveness=frozenset({("c", "thread_closed")}))
    assert learning.to_measure(close, measured) == [] and learning.to_measure(rating, measured)
    rated = facts(questions=asked, effectiveness=frozenset({("r", "thread_rated")}))
    assert learning.to_measure(rating, rated) == [] and learning.to_measure(close, rated) == ["scope-size"]
    assert learning.to_measure(close, None) == []
    failed = ThreadFailed(event_id="f", **ENV, error_code="x", message="y")
    assert learning.to_measure(failed, facts()) == []


def test_free_answers_of_a_thread_are_the_users_typed_ones() -> None:
    asked = (
        question(0, "scope-size", "small"),
        question(1, "scope-size", "two rooms and the hall"),
        question(2, "scope-focus", "the hall", assumed=True),
        question(3, "unknown-template", "the roof"),
    )
    found = facts(questions=asked, closed=True).free_answers({"scope-size": ["Small"], "scope-focus": []})
    assert [(a.thread_id, a.text, a.idea_type) for a in found] == [("t", "two rooms and the hall", "planning")]


def test_a_cause_is_learned_from_once() -> None:
    answers = AnswersRecorded(event_id="a", **ENV, answers=[Answer(question_id="q0", text="keep it short please")])
    policy = PreferencePolicy(ttl=timedelta(days=1))
    learned = evidence.preference_evidence(answers, facts(), [], policy)
    assert learned and {e.causation_id for e in learned} == {"a"} and {e.thread_id for e in learned} == {"t"}
    assert evidence.preference_evidence(answers, facts(evidence=frozenset({"a"})), [], policy) == []
    assert evidence.preference_evidence(answers, None, [], policy) == []
    depth = preferences.learn(preferences.Preference("ann", "depth", "depth"), "edit", "brief", T0, policy.ttl)
    rating = ThreadRated(event_id="r", **ENV, rating=5, draft_number=1)
    applied = facts(assumptions=((depth.preference_id, "brief"),))
    [credited] = evidence.preference_evidence(rating, applied, [depth], policy)
    assert credited.aggregate_id == preference_id("ann", "depth", "depth") and credited.evidence == "rating"
    assert (
        evidence.preference_evidence(rating, facts(assumptions=((depth.preference_id, "detailed"),)), [depth], policy)
        == []
    )


def test_a_close_validates_patterns_once() -> None:
    close = ThreadCompleted(event_id="c", **ENV, final_draft_number=2, reason="answered")
    asked = facts(questions=(question(0, "scope-size"),), closed=True)
    policy = PatternPolicy(threshold=0.5, min_validations=1)
    [skip] = learning.pattern_validations(close, asked, [], policy)
    assert (skip.kind, skip.outcome, skip.applied, skip.causation_id) == ("skip_question", "success", True, "c")
    held = Pattern("ann", "skip_question", "planning", "scope", validation_count=1, success_count=1)
    assert learning.pattern_validations(close, asked, [held], policy)[0].validation_count == 2
    assert learning.pattern_validations(close, facts(questions=asked.questions, observed=True), [], policy) == []
    assert learning.pattern_validations(close, facts(idea_type=None), [], policy) == []


def test_the_reactor_takes_the_same_events_as_before() -> None:
    """Its durable consumer's filters come from the handler map: changing them would change an existing consumer."""
    assert REACTION_EVENTS == (
        DraftPresented,
        AnswersRecorded,
        ThreadRated,
        ThreadCompleted,
        ThreadFailed,
        ExecutionCompleted,
        ExecutionAbandoned,
        JobFailed,
    )
    assert all(handlers.EVENT_HANDLERS[t] for t in REACTION_EVENTS)


def test_timers_fire_once_per_key_unless_disarmed() -> None:
    fired: list[str] = []

    async def run() -> None:
        timers = Timers()

        def fire(key: str):  # noqa: ANN202
            async def go() -> None:
                fired.append(key)
                if key == "b":
                    raise RuntimeError("logged, not raised")

            return go

        timers.schedule("a", 0.01, fire("a"))
        timers.schedule("a", 0.0, fire("a-again"))  # already armed: left as it is
        timers.schedule("b", 0.01, fire("b"))
        timers.schedule("c", 0.01, fire("c"))
        timers.disarm("c")
        await asyncio.sleep(0.05)
        timers.schedule("d", 10, fire("d"))
        timers.cancel_all()

    asyncio.run(run())
    assert sorted(fired) == ["a", "b"]

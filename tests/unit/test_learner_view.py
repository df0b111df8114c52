"""The learner's in-memory view follows its read model exactly: after every batch of a random story (threads asked,
answered by the user or by Hermes, in free text or not, closed, rated and re-rated; preferences learned and
forgotten; patterns validated; templates added, edited, deactivated and measured; repeated events), what a decision
reads from memory equals what SQLite answers, and a view loaded from the rows equals the one that followed them."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session

from hermes_proto.base import Event
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    Assumption,
    PatternValidated,
    PreferenceForgotten,
    PreferenceLearned,
    Question,
    QuestionsProposed,
    TemplateAdded,
    TemplateDeactivated,
    TemplateEdited,
    TemplateEffectivenessUpdated,
    ThreadCompleted,
    ThreadFailed,
    ThreadOpened,
    ThreadRated,
    preference_id,
)

from hermes_learner import queries, readmodel, tables
from hermes_learner.convert import ThreadFacts, utc
from hermes_learner.seeding import seed_templates
from hermes_learner.templates import SEED_TEMPLATES
from hermes_learner.view import LearnerView

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
USERS = ("ann", "bob")
TEMPLATE_IDS = [t.template_id for t in SEED_TEMPLATES[:6]] + ["learned-scope-two-rooms"]
ANSWERS = ("small", "Keep it simple", "no paid tools please", "", "not sure", "for 4 people, budget 50 euros")


class Story:
    """Events as the log holds them: several threads interleaved, each moving one step at a time."""

    def __init__(self, seed: int, threads: int) -> None:
        self.rng = random.Random(seed)
        self.events: list[Event] = []
        self.clock = T0
        self.n = 0
        self.open: dict[str, dict] = {}
        self.closed: list[tuple[str, str]] = []
        for i in range(threads):
            self.open[f"t{i}"] = {"step": 0, "user": self.rng.choice(USERS), "questions": []}

    def env(self, aggregate: str) -> dict:
        self.n += 1
        self.clock += timedelta(seconds=self.rng.choice((0, 0.5, 3, 20)))  # ties in time happen
        return dict(event_id=f"e{self.n}", aggregate_id=aggregate, occurred_at=self.clock, correlation_id=aggregate)

    def add(self, event: Event) -> None:
        self.events.append(event)
        if self.rng.random() < 0.05:  # a producer repeats itself (past the dedup window)
            self.events.append(event)

    def build(self) -> list[Event]:
        while self.open or self.closed:
            roll = self.rng.random()
            if roll < 0.1:
                self.global_event()
            elif self.closed and (roll < 0.25 or not self.open):
                self.after_close(*self.closed.pop(self.rng.randrange(len(self.closed))))
            elif self.open:
                self.step(self.rng.choice(sorted(self.open)))
        return self.events

    def global_event(self) -> None:
        rng, user = self.rng, self.rng.choice(USERS)
        kind = rng.choice(("learn", "learn", "forget", "add", "edit", "off"))
        if kind == "learn":
            category = rng.choice(("depth", "style", "constraint"))
            key = "budget" if category == "constraint" else category
            value = rng.choice(("detailed", "brief", "casual", "under 50"))
            self.add(
                PreferenceLearned(
                    **self.env(preference_id(user, category, key)),
                    user_id=user,
                    category=category,
                    key=key,
                    value=value,
                    votes={value: 1.0},
                    confidence=rng.choice((0.5, 0.8)),
                    stability=1.0,
                    observations=1,
                    source="explicit",
                    evidence="edit",
                    expires_at=self.clock + timedelta(days=rng.choice((-1, 30))),
                )
            )
        elif kind == "forget":
            category = rng.choice(("depth", "style"))
            self.add(
                PreferenceForgotten(
                    **self.env(preference_id(user, category, category)), user_id=user, category=category, key=category
                )
            )
        elif kind == "add":
            self.add(
                TemplateAdded(
                    **self.env(rng.choice(TEMPLATE_IDS)),
                    category="scope",
                    text="Which rooms?",
                    suggestions=["two rooms"],
                    status=rng.choice(("draft", "active")),
                )
            )
        elif kind == "edit":
            self.add(
                TemplateEdited(
                    **self.env(rng.choice(TEMPLATE_IDS)),
                    category="scope",
                    text="How large?",
                    suggestions=["small", "large"],
                    prior_improvement=0.7,
                    time_cost_s=12,
                )
            )
        else:
            self.add(TemplateDeactivated(**self.env(rng.choice(TEMPLATE_IDS))))

    def step(self, thread: str) -> None:
        rng, state = self.rng, self.open[thread]
        user = state["user"]
        if state["step"] == 0:
            applied = (
                [
                    Assumption(
                        preference_id=preference_id(user, "depth", "depth"),
                        category="depth",
                        key="depth",
                        value="detailed",
                        confidence=0.8,
                    )
                ]
                if rng.random() < 0.4
                else []
            )
            self.add(
                ThreadOpened(
                    **self.env(thread),
                    idea="plan a garden for my family",
                    user_id=user,
                    max_questions=rng.choice((0, 3, 5)),
                    assumptions=applied,
                )
            )
        elif state["step"] == 1 and rng.random() < 0.8:
            picked = [rng.choice(TEMPLATE_IDS) for _ in range(rng.randint(0, 3))]
            questions = [
                Question(question_id=f"{thread}-q{i}", template_id=t, category="scope", text="?")
                for i, t in enumerate(picked)
            ]
            state["questions"] = [q.question_id for q in questions]
            self.add(
                QuestionsProposed(
                    **self.env(thread), questions=questions, idea_type=rng.choice(("planning", "general")), clarity=0.2
                )
            )
        elif state["step"] in (2, 3) and state["questions"] and rng.random() < 0.7:
            answers = [
                Answer(question_id=q, text=rng.choice(ANSWERS), assumed=rng.random() < 0.2)
                for q in state["questions"]
                if rng.random() < 0.7
            ]
            answers.append(Answer(question_id="never-asked", text="x"))
            answers_event = AnswersRecorded(**self.env(thread), answers=answers)
            self.add(answers_event)
            if rng.random() < 0.5:
                self.add(
                    PreferenceLearned(
                        **dict(self.env(preference_id(user, "depth", "depth")), causation_id=answers_event.event_id),
                        user_id=user,
                        category="depth",
                        key="depth",
                        value="detailed",
                        votes={"detailed": 1.0},
                        confidence=0.8,
                        stability=1.0,
                        observations=1,
                        source="answers",
                        evidence="answer",
                        thread_id=thread,
                    )
                )
        elif state["step"] >= 4 or rng.random() < 0.2:
            close = rng.choice((ThreadCompleted, ThreadFailed))
            extra = (
                dict(final_draft_number=2, reason="answered")
                if close is ThreadCompleted
                else dict(error_code="backend_error", message="down")
            )
            event = close(**self.env(thread), **extra)
            self.add(event)
            del self.open[thread]
            self.closed.append((thread, event.event_id))
            return
        state["step"] += 1

    def after_close(self, thread: str, close_id: str) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            self.add(
                PatternValidated(
                    **dict(self.env(f"pattern-{thread[-1]}"), causation_id=close_id),
                    user_id="ann",
                    kind="skip_question",
                    idea_type="planning",
                    category="scope",
                    outcome="success",
                    validation_count=1,
                    success_count=1,
                    confidence=0.6,
                    thread_id=thread,
                )
            )
        for cause_id, cause in [(close_id, "thread_closed")] + (
            [(f"r{self.n}", "thread_rated")] if rng.random() < 0.5 else []
        ):
            if cause == "thread_rated":
                rating = ThreadRated(**self.env(thread), rating=rng.randint(1, 5), draft_number=1)
                self.add(rating)
                cause_id = rating.event_id
                if rng.random() < 0.3:
                    self.add(ThreadRated(**self.env(thread), rating=rng.randint(1, 5), draft_number=1))
            self.add(
                TemplateEffectivenessUpdated(
                    **dict(self.env(rng.choice(TEMPLATE_IDS)), causation_id=cause_id),
                    cause=cause,
                    thread_id=thread,
                    times_asked=1,
                    times_answered=1,
                    trend="new",
                    expected_improvement=0.5,
                )
            )


def comparable(facts: ThreadFacts | None) -> ThreadFacts | None:
    """``facts`` with its question rows as plain values (ORM rows and view copies compare so)."""
    if facts is None:
        return None
    return dataclasses.replace(
        facts,
        questions=tuple(
            tuple(
                utc(v) if isinstance(v, datetime) else v for v in (getattr(q, c) for c in tables.Question.__columns__)
            )
            for q in facts.questions
        ),
    )


def check(view: LearnerView, engine, threads: list[str]) -> int:
    """Assert memory answers as SQLite does; returns how many of ``threads`` memory held."""
    held = 0
    with Session(engine) as session:
        assert view.askable_templates() == queries.load_templates(session)
        assert dict(view.stats()) == queries.load_stats(session)
        for t in {r.template_id for r in session.exec(queries.select(tables.QuestionTemplateRow))} | {"none"}:
            assert view.template_view(t) == queries.template_view(session, t), t
        for user in USERS + ("nobody",):
            assert view.preferences(user) == queries.load_preferences(session, user)
            assert view.patterns(user) == queries.load_patterns(session, user)
        free = queries.free_answers(session)
        for thread in threads:
            memory = view.held_facts(thread)
            if memory is None:
                continue
            held += 1
            assert comparable(memory) == comparable(queries.thread_facts(session, thread)), thread
            assert memory.free_answers(view.suggestions()) == [a for a in free if a.thread_id == thread]
    return held


@pytest.mark.parametrize(("seed", "threads"), [(1, 40), (2, 40), (3, 40), (4, 160)])
def test_the_view_answers_as_the_rows_after_every_batch(tmp_path: Path, seed: int, threads: int) -> None:
    events = Story(seed, threads=threads).build()
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    with Session(engine) as session:
        seed_templates(session, SEED_TEMPLATES)
    store = readmodel.row_store(engine)
    view = LearnerView.load(engine, closed_capacity=6)  # small: closed threads leave memory and are read back
    opened = sorted({e.aggregate_id for e in events if isinstance(e, ThreadOpened)})
    rng, applied, held = random.Random(seed), 0, 0
    while applied < len(events):
        size = rng.randint(1, 30 if threads < 100 else 120)
        batch = readmodel.apply_events(store, events[applied : applied + size], applied + size)
        view.apply(store.changes, batch.opened)
        applied += size
        held += check(view, engine, opened)
    assert held > len(opened)  # memory answered most of the time
    if threads > 100:  # enough askings per template for trends (the view keeps only the last ones)
        assert {view.template_view(t).trend for t in TEMPLATE_IDS[:6]} - {"new"}
    reloaded = LearnerView.load(engine, closed_capacity=6)
    assert check(reloaded, engine, opened) > 0
    for thread in opened:
        both = view.held_facts(thread), reloaded.held_facts(thread)
        if None not in both:
            assert comparable(both[0]) == comparable(both[1])
    # A thread memory does not hold is read from SQLite, and an unknown one is None.
    gone = next(t for t in opened if view.held_facts(t) is None)
    with Session(engine) as session:
        assert comparable(asyncio.run(view.facts(gone))) == comparable(queries.thread_facts(session, gone))
    assert asyncio.run(view.facts("never-seen")) is None
    engine.dispose()


def test_rows_of_a_thread_not_held_make_it_untrusted(tmp_path: Path) -> None:
    """Questions that arrive before their thread was opened (no producer does this, but the rows would hold them):
    the thread is then never served from memory, so memory cannot disagree with the rows."""
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    store = readmodel.row_store(engine)
    view = LearnerView.load(engine)
    env = dict(aggregate_id="t", occurred_at=T0, correlation_id="t")
    early = QuestionsProposed(
        event_id="p",
        **env,
        idea_type="general",
        clarity=0.1,
        questions=[Question(question_id="q", template_id="scope-size", category="scope", text="?")],
    )
    for events in ([early], [ThreadOpened(event_id="o", **env, idea="x")]):
        batch = readmodel.apply_events(store, events, len(events))
        view.apply(store.changes, batch.opened)
    assert view.held_facts("t") is None
    facts = asyncio.run(view.facts("t"))
    assert facts is not None and [q.question_id for q in facts.questions] == ["q"]
    engine.dispose()


def test_memory_holds_new_threads_and_lets_old_closed_ones_go(tmp_path: Path) -> None:
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    store = readmodel.row_store(engine)
    view = LearnerView.load(engine, closed_capacity=2)

    def write(*events: Event) -> None:
        batch = readmodel.apply_events(store, events)
        view.apply(store.changes, batch.opened)

    def env(thread: str, name: str) -> dict:
        return dict(event_id=f"{thread}-{name}", aggregate_id=thread, occurred_at=T0, correlation_id=thread)

    for thread in ("a", "b", "c"):  # each opened and closed in one write
        write(
            ThreadOpened(**env(thread, "o"), idea="x"),
            ThreadCompleted(**env(thread, "c"), final_draft_number=1, reason="no_questions"),
        )
    assert [view.held_facts(t) is not None for t in "abc"] == [False, True, True]  # the oldest closed one left
    write(ThreadRated(**env("a", "r"), rating=4, draft_number=1), ThreadOpened(**env("d", "o"), idea="y"))
    assert view.held_facts("a") is None and view.held_facts("d") is not None  # a change does not bring it back
    with Session(engine) as session:
        assert queries.thread_facts(session, "a").closed
    engine.dispose()

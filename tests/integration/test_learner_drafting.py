"""Template drafts from recurring free-text answers and the effectiveness the learner records per template: the
pure drafting rule, the read model it reads, and the events the reactor builds from them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session
from test_learner_templates import _batch, _env

from hermes_proto.codec import decode_event, encode
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    Question,
    QuestionsProposed,
    TemplateAdded,
    TemplateEffectivenessUpdated,
    ThreadCompleted,
    ThreadOpened,
    ThreadRated,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.queries import SaveTemplate

from hermes_learner import drafting, queries, readmodel, seeding, tables
from hermes_learner.desk import problems
from hermes_learner.learning import drafted_event, effectiveness_event
from hermes_learner.templates import SEED_TEMPLATES

F = drafting.FreeAnswer


# ---- the rule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "suggestions", "free"),
    [
        ("Keep it simple", ("Nothing special", "Keep it simple"), False),
        ("  keep it SIMPLE. ", ("Nothing special", "Keep it simple"), False),
        ("keep it simple and cheap", ("Nothing special", "Keep it simple"), True),
        ("anything", (), True),
        ("   ", (), False),
    ],
)
def test_a_free_text_answer_is_one_no_suggestion_matches(answer, suggestions, free):
    assert drafting.is_free_text(answer, suggestions) is free


def test_phrases_are_two_or_three_words_not_framed_by_stopwords():
    found = drafting.phrases("No paid tools, please!")
    assert found == {"no paid", "paid tools", "no paid tools"}  # "tools please": ends with a stopword
    assert drafting.phrases("for the kids") == set()
    assert drafting.phrases("one") == set()


def test_a_phrase_in_free_answers_of_three_threads_of_one_category_is_drafted():
    answers = [
        F("t1", "constraint", "planning", "No paid tools please"),
        F("t2", "constraint", "planning", "no paid tools at all"),
        F("t2", "constraint", "planning", "no paid tools"),  # a second answer of t2: still one thread
        F("t3", "constraint", "coding", "We need no paid tools"),
        F("t4", "scope", "planning", "no paid tools"),  # another category: does not count
        F("t5", "constraint", "planning", "something else entirely"),
    ]
    [draft] = drafting.drafts(answers)
    assert draft.phrase == "no paid tools" and draft.category == "constraint"  # "paid tools" is inside it
    assert draft.template_id == "learned-constraint-no-paid-tools"
    assert draft.text == "Does “no paid tools” apply to {topic}?"
    assert draft.thread_ids == ("t1", "t2", "t3") and draft.idea_types == ("coding", "planning")
    # Each as first typed; equally frequent ones alphabetically (normalized).
    assert draft.suggestions == (
        "no paid tools",
        "no paid tools at all",
        "No paid tools please",
        "We need no paid tools",
    )
    # Two threads only: nothing; the draft exists already: nothing (idempotent).
    assert drafting.drafts([a for a in answers if a.thread_id != "t3"]) == []
    assert drafting.drafts(answers, existing={draft.template_id}) == []
    assert drafting.drafts(answers, categories={"scope"}) == []
    assert drafting.drafts(list(reversed(answers))) == [draft]  # order-independent


def test_a_draft_is_a_definition_the_learner_accepts_and_activating_it_stays_valid():
    long = "we need " + "really quite remarkably " * 5 + "no paid tools"
    texts = [long, "no paid tools", "No paid tools!", "no paid tools ok", "no paid tools x"]
    answers = [F(f"t{n}", "constraint", "planning", text) for n, text in enumerate(texts)]
    [draft] = drafting.drafts(answers)
    assert len(draft.suggestions) == drafting.MAX_SUGGESTIONS
    assert draft.suggestions[0] == "no paid tools"  # given twice ("No paid tools!"): the most frequent first
    assert all(1 <= len(s) <= drafting.SUGGESTION_CHARS for s in draft.suggestions)
    event = drafted_event(draft, cause=ThreadCompleted(**_env("t4", "done"), final_draft_number=2, reason="x"))
    assert (event.status, event.source, event.phrase, event.learned_from) == (
        "draft",
        "learned",
        "no paid tools",
        list(draft.thread_ids),
    )
    assert event.event_id == derived_id("template_drafted", draft.template_id)
    assert decode_event(encode(event)) == event
    save = SaveTemplate(
        template_id=draft.template_id,
        create=False,
        category=event.category,
        text=event.text,
        suggestions=event.suggestions,
        idea_types=event.idea_types,
        status="active",
        prior_improvement=event.prior_improvement,
        time_cost_s=event.time_cost_s,
    )
    assert problems(save) is None
    assert drafting.draft_id("constraint", "x" * 70).startswith("learned-constraint-")
    assert len(drafting.draft_id("constraint", "x" * 70)) <= 64


def test_old_template_added_events_still_decode():
    old = TemplateAdded(**_env("scope-old", "added"), category="scope", text="Which rooms?")
    raw = encode(old).replace(b',"phrase":""', b"").replace(b',"learned_from":[]', b"")
    assert b"phrase" not in raw and decode_event(raw) == old


# ---- the read model and the events ---------------------------------------------------------------------


def _thread(n: int, template_id: str, category: str, answer: str | None, rating: int | None = None):
    thread, start = f"t{n}", utcnow()
    q = Question(question_id=f"t{n}-q", template_id=template_id, category=category, text="?")
    events = [
        ThreadOpened(**_env(thread, "opened", start), idea="plan a garden"),
        QuestionsProposed(**_env(thread, "proposed", start), questions=[q], idea_type="planning", clarity=0.2),
    ]
    if answer is not None:
        events.append(
            AnswersRecorded(
                **_env(thread, "answered", start + timedelta(seconds=12)),
                answers=[Answer(question_id=q.question_id, text=answer)],
            )
        )
    events.append(
        ThreadCompleted(**_env(thread, "done", start + timedelta(seconds=20)), final_draft_number=2, reason="answered")
    )
    if rating is not None:
        events.append(
            ThreadRated(**_env(thread, "rated", start + timedelta(seconds=30)), rating=rating, draft_number=2)
        )
    return events


def test_free_answers_and_the_effectiveness_event_come_from_the_read_model(tmp_path):
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'learner.db'}")
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)
    events = (
        _thread(1, "constraint-must-avoid", "constraint", "Keep it simple", rating=4)  # a suggestion
        + _thread(2, "constraint-must-avoid", "constraint", "no paid tools please", rating=2)
        + _thread(3, "scope-focus", "scope", "the watering first")  # scope-focus has no suggestions
        + _thread(4, "constraint-must-avoid", "constraint", None)
    )
    readmodel.apply_batch(engine, _batch(events))
    with Session(engine) as session:
        free = queries.free_answers(session)
        view = queries.template_view(session, "constraint-must-avoid")
        measured = queries.thread_facts(session, "t2").measured_templates(include_assumed=False)
        assert measured == ["constraint-must-avoid"]
        assert not queries.thread_facts(session, "t2").effectiveness_recorded(closed=True)
    assert [(a.thread_id, a.category, a.text) for a in free] == [
        ("t2", "constraint", "no paid tools please"),
        ("t3", "scope", "the watering first"),
    ]
    closed = next(e for e in events if isinstance(e, ThreadCompleted) and e.aggregate_id == "t4")
    event = effectiveness_event(view, "thread_closed", closed)
    assert event.event_id == derived_id(closed.event_id, "template_effectiveness", "constraint-must-avoid")
    assert (event.aggregate_id, event.thread_id, event.causation_id) == ("constraint-must-avoid", "t4", closed.event_id)
    assert (event.times_asked, event.times_answered, event.answer_rate) == (3, 2, round(2 / 3, 4))
    assert (event.rated_threads, event.mean_rating, event.mean_answer_time_s) == (2, 3.0, 12.0)
    assert event.trend == "new" and event.expected_improvement == view.expected_improvement
    assert event.mean_clarity_gain == view.mean_clarity_gain is not None

    # Applied, the event marks its cause as measured (a redelivery appends nothing new); the stats do not move.
    readmodel.apply_batch(engine, _batch([event, event], first=len(events) + 1))
    with Session(engine) as session:
        assert queries.thread_facts(session, "t4").effectiveness_recorded(closed=True)
        assert queries.thread_facts(session, "t4").effectiveness_recorded(cause_id=closed.event_id)
        assert not queries.thread_facts(session, "t4").effectiveness_recorded(cause_id="other")
        assert queries.template_view(session, "constraint-must-avoid") == view
    assert isinstance(decode_event(encode(event)), TemplateEffectivenessUpdated)
    engine.dispose()

"""Learned preferences as pure functions: reading answers, the confidence update, corrections and edits, expiry,
which question categories they answer, the draft-1 prompt that applies them, and the read model built from the log
(a rebuild gives identical rows)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.codec import encode
from hermes_proto.commands import AnswerQuestions, SubmitIdea
from hermes_proto.events import Answer, Assumption, PreferenceForgotten, ThreadOpened, preference_id
from hermes_proto.ids import new_id

from hermes_learner import domain, preferences, queries, readmodel, tables
from hermes_learner.evidence import learned_event
from hermes_learner.preferences import Preference, learn, observe
from hermes_learner.templates import SEED_SLOTS, SEED_TEMPLATES
from hermes_orchestrator import domain as orchestrator

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TTL = timedelta(days=180)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "A detailed plan please, budget under 500 euros; in Lisbon, by March and for my team",
            {
                ("depth", "depth", "detailed"),
                ("constraint", "budget", "budget under 500 euros"),
                ("constraint", "location", "in lisbon"),
                ("constraint", "deadline", "by march"),
                ("constraint", "audience", "for my team"),
            },
        ),
        ("keep it casual", {("style", "style", "casual")}),
        ("Something short and formal", {("depth", "depth", "overview"), ("style", "style", "formal")}),
        ("a comprehensive guide, technical", {("depth", "depth", "comprehensive"), ("style", "style", "technical")}),
        ("I live in Porto", {("constraint", "location", "i live in porto")}),
        ("in time for the party", set()),  # "in" + a lowercase word is no place
        ("no idea", set()),
        ("", set()),
    ],
)
def test_answers_show_depth_style_and_recurring_constraints(answer, expected):
    assert {(o.category, o.key, o.value) for o in observe(answer)} == expected


def test_three_consistent_answers_reach_the_default_threshold():
    pref = Preference("local", "depth", "depth")
    confidences = []
    for _ in range(4):
        pref = learn(pref, "answer", "detailed", NOW, TTL)
        confidences.append(pref.confidence())
    # votes / (votes + 1 pseudo-observation): 1/2, 2/3, 3/4, 4/5
    assert confidences == [0.5, 0.6667, 0.75, 0.8]
    assert pref.value == "detailed" and pref.stability() == 1.0 and pref.observations == 4
    assert pref.expires_at == NOW + TTL
    assert not Preference("local", "depth", "depth").usable(0.0001, NOW)  # nothing learned: never usable


def test_mixed_answers_lower_confidence_and_stability():
    pref = Preference("local", "style", "style")
    for value in ("casual", "casual", "formal"):
        pref = learn(pref, "answer", value, NOW, TTL)
    assert pref.value == "casual"
    assert pref.confidence() == round(2 / 4, 4) and pref.stability() == round(2 / 3, 4)


def test_a_correction_lowers_confidence_and_flips_a_short_history():
    short = learn(
        learn(Preference("local", "depth", "depth"), "answer", "overview", NOW, TTL), "answer", "overview", NOW, TTL
    )
    assert short.confidence() == 0.6667
    corrected = learn(short, "correction", "detailed", NOW, TTL)
    # overview keeps half its 2 votes, detailed gets 3: {overview: 1, detailed: 3} -> 3 / 5
    assert corrected.value == "detailed" and corrected.confidence() == 0.6 and corrected.corrections == 1


def test_a_correction_against_a_long_history_lowers_but_does_not_flip():
    pref = Preference("local", "depth", "depth")
    for _ in range(10):
        pref = learn(pref, "answer", "overview", NOW, TTL)
    corrected = learn(pref, "correction", "detailed", NOW, TTL)
    # {overview: 5, detailed: 3} -> overview at 5 / 9
    assert corrected.value == "overview" and corrected.confidence() == round(5 / 9, 4) < pref.confidence()
    again = learn(corrected, "correction", "detailed", NOW, TTL)  # {overview: 2.5, detailed: 6}
    assert again.value == "detailed" and again.corrections == 2


def test_an_edit_sets_the_value_whatever_was_learned():
    pref = Preference("local", "style", "style")
    for _ in range(6):
        pref = learn(pref, "answer", "formal", NOW, TTL)
    edited = learn(pref, "edit", "casual", NOW, TTL)
    assert edited.value == "casual" and edited.votes == {"casual": 9.0} and edited.confidence() == 0.9


def test_ratings_confirm_or_doubt_the_applied_value():
    pref = learn(
        learn(Preference("local", "depth", "depth"), "answer", "detailed", NOW, TTL), "answer", "detailed", NOW, TTL
    )
    assert learn(pref, "rating", None, NOW, TTL, rating=5).confidence() == round(2.5 / 3.5, 4)
    assert learn(pref, "rating", None, NOW, TTL, rating=1).confidence() == round(2 / 3.5, 4)
    assert learn(pref, "rating", None, NOW, TTL, rating=3).confidence() == pref.confidence()
    with pytest.raises(ValueError):
        learn(pref, "rating", None, NOW, TTL)
    with pytest.raises(ValueError):
        learn(pref, "answer", None, NOW, TTL)
    with pytest.raises(ValueError):
        learn(pref, "guess", "x", NOW, TTL)


def _confident(category: str, key: str, value: str, times: int = 3, at: datetime = NOW) -> Preference:
    pref = Preference("local", category, key)
    for _ in range(times):
        pref = learn(pref, "answer", value, at, TTL)
    return pref


def test_each_slot_is_known_on_its_own():
    """A question is skipped exactly when its own slot is known with confidence: an unsure location leaves the budget
    and the depth known, and only the location is asked."""
    depth = _confident("depth", "depth", "detailed")
    budget = _confident("constraint", "budget", "500 EUR")
    unsure = _confident("constraint", "location", "lisbon", times=1)
    known = preferences.known_slots([depth, budget, unsure], ("",), 0.75, NOW)
    assert set(known) == {"depth", "budget"}
    later = NOW + TTL + timedelta(seconds=1)
    assert preferences.known_slots([depth, budget], ("",), 0.75, later) == {}


def test_the_most_specific_fact_wins_unless_it_disagrees():
    everywhere = _confident("fact", "audience", "just me")
    writing = Preference("local", "fact", "audience", scope="type:writing")
    for _ in range(3):
        writing = learn(writing, "answer", "reader", NOW, TTL)
    coding_unsure = learn(Preference("local", "fact", "audience", scope="type:coding"), "answer", "team", NOW, TTL)
    coding_agrees = learn(Preference("local", "fact", "audience", scope="type:coding"), "answer", "just me", NOW, TTL)
    held = [everywhere, writing, coding_unsure]
    assert preferences.known_slots(held, ("type:writing", ""), 0.75, NOW)["audience"] is writing
    # a more specific belief that says something else, even an unsure one, means ask
    assert preferences.known_slots(held, ("type:coding", ""), 0.75, NOW) == {}
    agreeing = [everywhere, coding_agrees]
    assert preferences.known_slots(agreeing, ("type:coding", ""), 0.75, NOW)["audience"] is everywhere
    # a type never seen gets the everywhere fact only once two types held it (or none holds the slot at all)
    assert preferences.known_slots(agreeing, ("type:planning", ""), 0.75, NOW) == {}
    research = learn(Preference("local", "fact", "audience", scope="type:research"), "answer", "just me", NOW, TTL)
    wider = [everywhere, coding_agrees, research]
    assert preferences.known_slots(wider, ("type:planning", ""), 0.75, NOW)["audience"] is everywhere
    assert preferences.known_slots([everywhere], ("type:planning", ""), 0.75, NOW)["audience"] is everywhere


def test_known_slots_are_assumed_not_asked():
    idea = "help me plan a trip"
    asked = domain.choose(idea, "Draft one.", SEED_TEMPLATES, {}, 5, draft_event_id="d")
    assert "constraint-budget" in {q.template_id for q in asked.questions}
    budget = _confident("constraint", "budget", "500 EUR")
    budget = learn(budget, "answer", "500 EUR", NOW, TTL, wording="under 500 euros")
    prefs = {"budget": budget, "depth": _confident("depth", "depth", "detailed")}
    known = {slot: preferences.assumptions([p])[0] for slot, p in prefs.items()}
    known["result"] = None  # a slot the user leaves unanswered: not asked, nothing assumed
    decision = domain.choose(idea, "Draft one.", SEED_TEMPLATES, {}, 5, draft_event_id="d", known=known)
    ids = {q.template_id for q in decision.questions}
    assert not ids & {"constraint-budget", "scope-size", "scope-depth", "intent-main-result"}
    assert "constraint-time" in ids  # another slot of the same category is still asked
    assert all(q.slot == SEED_SLOTS[q.template_id] for q in decision.questions)
    assert [(a.key, a.value) for a in decision.assumptions] == [("budget", "under 500 euros"), ("depth", "detailed")]
    assert "assumed from learned facts: budget, depth" in decision.reason
    assert "the user leaves them unanswered: result" in decision.reason


def test_draft1_prompt_applies_the_assumptions_and_records_them():
    assumptions = [
        Assumption(preference_id="p1", category="constraint", key="budget", value="under 500 euros", confidence=0.8),
        Assumption(preference_id="p2", category="depth", key="depth", value="detailed", confidence=0.75),
    ]
    cmd = SubmitIdea(command_id=new_id(), issued_at=NOW, thread_id=new_id(), idea="plan a trip")
    opened, job = orchestrator.decide_submit(None, cmd, orchestrator.Limits(), NOW, assumptions)
    system = job.messages[0].content
    assert "- Budget: under 500 euros" in system and "- Depth: detailed" in system
    assert opened.assumptions == assumptions
    plain = orchestrator.decide_submit(None, cmd, orchestrator.Limits(), NOW)[1].messages[0].content
    assert (
        plain == orchestrator.SYSTEM_PROMPT
        and not orchestrator.decide_submit(None, cmd, orchestrator.Limits(), NOW)[0].assumptions
    )
    # Draft 2 keeps them: the refinement prompt repeats the preferences draft 1 applied, beside the answers.
    state = orchestrator.ThreadState(
        thread_id=cmd.thread_id,
        idea=cmd.idea,
        status=orchestrator.AWAITING_ANSWERS,
        correlation_id="c",
        max_questions=5,
        draft1="Draft one.",
        questions=[orchestrator.QuestionState("q1", "Why now?")],
        assumptions=assumptions,
    )
    answer = AnswerQuestions(
        command_id=new_id(),
        issued_at=NOW,
        thread_id=cmd.thread_id,
        answers=[Answer(question_id="q1", text="a birthday")],
    )
    _, draft2 = orchestrator.decide_answers(state, answer, orchestrator.Limits(), NOW)
    assert draft2.messages[0].content == system and "- Why now? a birthday" in draft2.messages[1].content


def _env(aggregate: str, at: datetime) -> dict:
    return dict(event_id=new_id(), aggregate_id=aggregate, occurred_at=at, correlation_id=aggregate)


def test_the_read_model_is_the_log_and_rebuilds_identically(tmp_path):
    depth = Preference("local", "depth", "depth")
    log = []
    for i in range(3):
        depth = learn(depth, "answer", "detailed", NOW + timedelta(minutes=i), TTL)
        log.append(learned_event(depth, "answer"))
    thread = new_id()
    log.append(
        ThreadOpened(
            **_env(thread, NOW + timedelta(minutes=5)), idea="plan a trip", assumptions=preferences.assumptions([depth])
        )
    )
    style = learn(Preference("local", "style", "style"), "edit", "casual", NOW, TTL)
    log.append(learned_event(style, "edit"))
    log.append(
        PreferenceForgotten(
            **_env(style.preference_id, NOW + timedelta(minutes=6)), user_id="local", category="style", key="style"
        )
    )

    def build(path):
        engine = tables.make_engine(f"sqlite:///{path}")
        readmodel.apply_batch(engine, [(i, subjects.event_subject(e), encode(e)) for i, e in enumerate(log, 1)])
        engine.dispose()
        with sqlite3.connect(path) as db:
            return {
                t: sorted(db.execute(f"SELECT * FROM {t}").fetchall())
                for t in ("user_preferences", "preference_evidence")
            }

    first, second = build(tmp_path / "a.db"), build(tmp_path / "b.db")
    assert first == second
    [row] = first["user_preferences"]  # the style preference was forgotten
    assert row[0] == preference_id("local", "depth", "depth") == depth.preference_id
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with Session(engine) as session:
        [view] = queries.preference_views(session, "local", 0.75, NOW)
        [loaded] = queries.load_preferences(session, "local")
    assert (view.value, view.confidence, view.usage, view.applied, view.observations) == ("detailed", 0.75, 1, True, 3)
    assert loaded == depth

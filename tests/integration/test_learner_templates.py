"""Question templates as data the user controls and the learner measures: effectiveness statistics (answer
rate, time to answer, clarity gain, ratings, trend), exploration of new templates, and templates added, edited
and deactivated over ``hermes.control.template`` — as pure functions, on a real SQLite read model, and through
the learner as a real process on a real JetStream server."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
from conftest import stored_events, wait_until
from sqlmodel import Session
from test_learner import _rows, choose, learner, open_and_present  # noqa: F401 (the fixture)

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_event, encode
from hermes_proto.events import (
    STYLES,
    TEMPLATE_TIMINGS,
    Answer,
    AnswersRecorded,
    Question,
    QuestionsProposed,
    TemplateAdded,
    TemplateDeactivated,
    TemplateEdited,
    ThreadCompleted,
    ThreadOpened,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.queries import SaveTemplate, TemplatesQuery, TemplatesReply

from hermes_learner import domain, preferences, queries, readmodel, seeding, tables
from hermes_learner.desk import problems
from hermes_learner.templates import SEED_TEMPLATES

T = domain.QuestionTemplate
EFFECTIVENESS = (
    "times_asked",
    "times_answered",
    "answer_rate",
    "rated_threads",
    "mean_rating",
    "mean_answer_time_s",
    "mean_clarity_gain",
    "trend",
    "expected_improvement",
)
"""What a ``TemplateEffectivenessUpdated`` records of a template, as named in its ``TemplateView``."""


# ---- pure ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answered", "expected"),
    [
        ([True] * 19, "new"),
        ([False] * 10 + [True] * 10, "improving"),
        ([True] * 10 + [False] * 10, "declining"),
        ([True, False] * 10, "stable"),
        ([False] * 30 + [True] * 5 + [False] * 5 + [True] * 8 + [False] * 2, "improving"),
    ],
)
def test_trend_compares_the_last_askings_with_the_ones_before(answered, expected):
    assert domain.trend(answered) == expected


def test_exploration_bonus_favours_the_rarely_asked_and_fades():
    assert domain.exploration_bonus(0, 0, 0.5) == 1.0  # nothing asked yet: no reason to prefer anyone
    bonuses = [domain.exploration_bonus(n, 200, 0.5) for n in (0, 1, 5, 50, 200)]
    assert bonuses == sorted(bonuses, reverse=True) and bonuses[0] > 2 > bonuses[-1] > 1
    assert domain.exploration_bonus(0, 200, 0.0) == 1.0


def test_a_new_template_gets_tried_before_a_measured_one_of_equal_prior():
    measured = T("a-measured", "scope", "How big is {topic}?", prior_improvement=0.6, time_cost_s=15)
    new = T("b-new", "scope", "What is in and out of {topic}?", prior_improvement=0.6, time_cost_s=15)
    stats = {"a-measured": domain.TemplateStats(times_asked=40, times_answered=20)}
    explored = choose("plan a garden", cap=1, stats=stats, templates=[measured, new], per_category=1)
    assert [q.template_id for q in explored.questions] == ["b-new"]
    exploited = choose("plan a garden", cap=1, stats=stats, templates=[measured, new], per_category=1, exploration=0.0)
    assert [q.template_id for q in exploited.questions] == ["a-measured"]  # equal value: the smaller id
    off = choose("plan a garden", cap=1, stats=stats, templates=[measured, new], per_category=1, use_stats=False)
    assert [q.template_id for q in off.questions] == ["a-measured"]  # learning off: priors only, no bonus


def test_clarity_gain_rewards_answers_that_pin_the_idea_down():
    assert domain.clarity_gain("plan a garden", "for 4 people, budget 50 euros, by May, on my balcony") > 0.1
    assert domain.clarity_gain("plan a garden", "ok") <= 0.05


def save(**fields) -> SaveTemplate:
    return SaveTemplate(
        **{
            "template_id": "scope-rooms",
            "create": True,
            "category": "scope",
            "text": "Which rooms of {topic} count?",
            **fields,
        }
    )


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({}, None),
        ({"category": "mood"}, "category must be one of"),
        ({"idea_types": ["planning", "cooking"]}, "unknown idea type(s) cooking"),
        ({"status": "maybe"}, "status must be one of"),
        ({"triggers": ["(unclosed"]}, "is not a regular expression"),
        ({"text": "Which {room} of {topic}?"}, "only hold the {topic} slot"),
        (
            {"variations": {"casual": "Which rooms?", "technical": "Which {room} count?"}},
            "technical variation may only",
        ),
        ({"variations": {"loud": "WHICH ROOMS?"}}, "unknown style(s) loud"),  # msgspec refuses it on decode, too
        ({"timing": "middle"}, "timing must be one of"),
        ({"variations": {s: f"Which rooms ({s})?" for s in STYLES}, "timing": "last"}, None),
    ],
)
def test_a_template_is_checked_before_it_is_saved(fields, problem):
    found = problems(save(**fields))
    assert (found is None) if problem is None else (problem in found)


def test_the_contract_refuses_an_unknown_style_or_timing():
    ok = msgspec.json.encode(save(variations={"formal": "Which rooms, please?"}, timing="first"))
    assert msgspec.json.decode(ok, type=SaveTemplate).variations == {"formal": "Which rooms, please?"}
    for bad in (
        {"variations": {"loud": "WHICH ROOMS?"}},
        {"variations": {"casual": ""}},
        {"variations": {"casual": "x" * 301}},
        {"timing": "middle"},
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(msgspec.json.encode(save(**bad)), type=SaveTemplate)


def test_every_seed_has_a_variation_per_style_and_a_timing():
    for t in SEED_TEMPLATES:
        assert set(t.variations) == set(STYLES) and t.timing in TEMPLATE_TIMINGS, t.template_id
        assert all(0 < len(v) <= 300 and v.endswith("?") and v != t.text for v in t.variations.values())
        assert len(set(t.variations.values())) == len(STYLES), t.template_id  # three different wordings
        assert all(set(re.findall(r"\{([^}]*)\}", v)) <= {"topic"} for v in t.variations.values())
        fields = {k: getattr(t, k) for k in ("category", "text", "prior_improvement", "time_cost_s", "timing")}
        request = SaveTemplate(
            template_id=t.template_id,
            create=True,
            suggestions=list(t.suggestions),
            idea_types=list(t.idea_types),
            triggers=list(t.triggers),
            variations=dict(t.variations),
            **fields,
        )
        assert problems(request) is None, t.template_id
    timings = {t.category: {s.timing for s in SEED_TEMPLATES if s.category == t.category} for t in SEED_TEMPLATES}
    assert timings["intent"] == {"first"} and timings["success"] == {"last"}


def _style(answers: int, *, value: str = "casual", expired: bool = False) -> preferences.Preference:
    now, pref = utcnow(), preferences.Preference("local", "style", "style")
    for _ in range(answers):
        pref = preferences.learn(pref, "answer", value, now, timedelta(days=-1 if expired else 30))
    return pref


def test_the_user_s_usable_style_words_the_questions_and_nothing_else():
    now, idea = utcnow(), "help me plan a vegetable garden on my balcony"
    plain = choose(idea)
    assert plain.questions and all(
        q.text
        == next(t for t in SEED_TEMPLATES if t.template_id == q.template_id).text.replace("{topic}", domain.topic(idea))
        for q in plain.questions
    )
    for pref, usable in ((_style(3), True), (_style(1), False), (_style(3, expired=True), False)):
        style = preferences.usable_style([pref], 0.75, now)
        assert style == ("casual" if usable else None), pref
        worded = domain.choose(idea, "", SEED_TEMPLATES, {}, 5, draft_event_id="draft-1", style=style)
        assert [(q.question_id, q.template_id, q.expected_value) for q in worded.questions] == [
            (q.question_id, q.template_id, q.expected_value) for q in plain.questions
        ]  # same questions, same stats
        seeds = {t.template_id: t for t in SEED_TEMPLATES}
        expected = [
            (seeds[q.template_id].variations["casual"] if usable else seeds[q.template_id].text).replace(
                "{topic}", domain.topic(idea)
            )
            for q in worded.questions
        ]
        assert [q.text for q in worded.questions] == expected
    technical = domain.choose(
        idea,
        "",
        SEED_TEMPLATES,
        {},
        5,
        draft_event_id="draft-1",
        style=preferences.usable_style([_style(3, value="technical")], 0.75, now),
    )
    assert [q.text for q in technical.questions] != [q.text for q in plain.questions]
    # A template without a variation for that style keeps its text.
    bare = T("scope-bare", "scope", "How much of {topic}?", prior_improvement=0.9, time_cost_s=10)
    [q] = domain.choose("x", "", [bare], {}, 1, draft_event_id="d", style="formal").questions
    assert q.text == "How much of “x”?"


def test_questions_are_shown_by_timing_and_by_value_inside_each_timing():
    templates = [
        T("a-last", "success", "Done when?", prior_improvement=0.9, time_cost_s=10, timing="last"),
        T("b-any", "scope", "How big?", prior_improvement=0.8, time_cost_s=10),
        T("c-any", "context", "For whom?", prior_improvement=0.5, time_cost_s=10, timing="any"),
        T("d-first", "intent", "What for?", prior_improvement=0.3, time_cost_s=10, timing="first"),
        T("e-first", "constraint", "Budget?", prior_improvement=0.6, time_cost_s=10, timing="first"),
        T("f-odd", "scope", "How long?", prior_improvement=0.7, time_cost_s=10, timing="whenever"),
    ]
    decision = choose("plan a garden", cap=6, templates=templates, use_stats=False)
    ids = [q.template_id for q in decision.questions]
    assert ids[:2] == ["e-first", "d-first"] and ids[-1] == "a-last"  # the unknown timing counts as any
    by_value = sorted(decision.questions, key=lambda q: -q.expected_value)
    rank = {"first": 0, "last": 2}
    assert decision.questions == sorted(by_value, key=lambda q: rank.get(q.template_id.split("-")[1], 1))
    assert by_value[0].template_id == "a-last"  # the best one is still asked, only shown last
    # The order never changes which questions are asked.
    capped = choose("plan a garden", cap=2, templates=templates, use_stats=False)
    assert [q.template_id for q in capped.questions] == ["b-any", "a-last"]


# ---- read model --------------------------------------------------------------------------------------


def _env(aggregate: str, name: str, at=None) -> dict:
    return dict(
        event_id=derived_id(aggregate, name), aggregate_id=aggregate, occurred_at=at or utcnow(), correlation_id="corr"
    )


def _batch(events, first: int = 1):
    return [
        (seq, f"hermes.evt.{e.aggregate_type}.{e.aggregate_id}.{e.type_name()}", encode(e))
        for seq, e in enumerate(events, first)
    ]


def test_effectiveness_is_measured_from_the_log(tmp_path):
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'learner.db'}")
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)
    start = utcnow()
    events = []
    for n in range(4):  # four threads ask scope-size; the first three answer it, 30 s after asking
        thread = f"t{n}"
        q = Question(question_id=f"{thread}-q", template_id="scope-size", category="scope", text="?")
        events += [
            ThreadOpened(**_env(thread, "opened", start), idea="plan a garden"),
            QuestionsProposed(**_env(thread, "proposed", start), questions=[q], idea_type="planning", clarity=0.2),
        ]
        if n < 3:
            events.append(
                AnswersRecorded(
                    **_env(thread, "answered", start + timedelta(seconds=30)),
                    answers=[Answer(question_id=q.question_id, text="for 4 people, budget 50 euros, by May")],
                )
            )
        events.append(
            ThreadCompleted(
                **_env(thread, "done", start + timedelta(seconds=40 + n)), final_draft_number=2, reason="answered"
            )
        )
    assert readmodel.apply_batch(engine, _batch(events)) == []
    with Session(engine) as session:
        view = queries.template_view(session, "scope-size")
    assert (view.times_asked, view.times_answered, view.answer_rate) == (4, 3, 0.75)
    assert view.mean_answer_time_s == 30.0
    assert view.mean_clarity_gain == domain.clarity_gain("plan a garden", "for 4 people, budget 50 euros, by May")
    assert view.trend == "new" and view.source == "seed" and view.active
    engine.dispose()


def test_added_edited_and_deactivated_templates_and_the_seeds(tmp_path):
    db = tmp_path / "learner.db"
    engine = tables.make_engine(f"sqlite:///{db}")
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)
    events = [
        TemplateAdded(**_env("scope-rooms", "added"), category="scope", text="Which rooms?", status="draft"),
        TemplateEdited(
            **_env("scope-size", "edited"),
            category="scope",
            text="How large, roughly?",
            prior_improvement=0.7,
            time_cost_s=12,
        ),
        TemplateDeactivated(**_env("scope-focus", "off"), reason="never helps"),
    ]
    readmodel.apply_batch(engine, _batch(events))
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)  # a restart: the seeds must not undo the edit
        askable = {t.template_id: t for t in queries.load_templates(session)}
        views = {v.template_id: v for v in queries.template_views(session, include_inactive=True)}
        listed = {v.template_id for v in queries.template_views(session, include_inactive=False)}
    assert askable["scope-size"].text == "How large, roughly?" and askable["scope-size"].time_cost_s == 12
    assert "scope-rooms" not in askable and views["scope-rooms"].status == "draft"  # a draft is not asked
    assert "scope-focus" not in askable and not views["scope-focus"].active and "scope-focus" not in listed
    assert views["scope-rooms"].source == "user" and views["scope-rooms"].expected_improvement == 0.5
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM question_templates").fetchone()[0] == len(SEED_TEMPLATES) + 1
    con.close()
    engine.dispose()


def test_an_old_template_event_without_variations_or_timing_decodes(tmp_path):
    new = TemplateAdded(
        **_env("scope-old", "added"),
        category="scope",
        text="Which rooms?",
        timing="last",
        variations={"casual": "Rooms?"},
    )
    old = msgspec.json.decode(encode(new))
    del old["variations"], old["timing"]  # as written before the fields existed
    decoded = decode_event(msgspec.json.encode(old))
    assert isinstance(decoded, TemplateAdded) and (decoded.variations, decoded.timing) == ({}, "any")
    assert decode_event(encode(new)) == new
    engine = tables.make_engine(f"sqlite:///{tmp_path / 'learner.db'}")
    edit = TemplateEdited(
        **_env("scope-size", "edited"),
        category="scope",
        text="How large?",
        timing="first",
        variations={"formal": "How large should it be, please?"},
    )
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)
    assert readmodel.apply_batch(engine, _batch([decoded, edit])) == []
    with Session(engine) as session:
        seeding.seed_templates(session, SEED_TEMPLATES)  # a restart leaves the edit alone
        views = {v.template_id: v for v in queries.template_views(session, include_inactive=True)}
        askable = {t.template_id: t for t in queries.load_templates(session)}
    assert (views["scope-old"].variations, views["scope-old"].timing) == ({}, "any")
    assert (askable["scope-size"].variations, askable["scope-size"].timing) == (edit.variations, "first")
    seed = next(t for t in SEED_TEMPLATES if t.template_id == "intent-main-result")
    assert (views[seed.template_id].variations, views[seed.template_id].timing) == (seed.variations, "first")
    assert askable[seed.template_id] == seed
    engine.dispose()


# ---- the learner as a process --------------------------------------------------------------------------


async def control(nc, request) -> dict:
    reply = await nc.request(subjects.CONTROL_TEMPLATE, msgspec.json.encode(request), timeout=10)
    return msgspec.json.decode(reply.data)


async def test_templates_through_the_bus_are_asked_measured_and_rebuilt(js_client, learner):
    nc, js = js_client
    store = EventStore(js, "test")
    await wait_until(lambda: learner.proc.logged_since(0, "learner_started"), timeout_s=30)
    added = await control(
        nc,
        save(
            template_id="scope-rooms",
            text="Which rooms of {topic} are involved?",
            triggers=[r"\bflat\b|\bhouse\b"],
            prior_improvement=0.8,
            time_cost_s=10,
            suggestions=["all of them", "just the kitchen"],
        ),
    )
    [view] = msgspec.convert(added, TemplatesReply).templates
    assert (view.template_id, view.source, view.times_asked, view.trend) == ("scope-rooms", "user", 0, "new")
    assert (await control(nc, save(template_id="scope-rooms")))["code"] == "template_exists"
    assert (await control(nc, save(template_id="other", category="mood")))["code"] == "bad_request"

    # The new template is asked where its trigger matches (a bonus for being new helps it in).
    _, draft = await open_and_present(store, "help me repaint my flat")
    proposal = await wait_until(lambda: _proposal(js, draft.aggregate_id), timeout_s=20)
    assert "scope-rooms" in [q.template_id for q in proposal.questions]
    question = next(q for q in proposal.questions if q.template_id == "scope-rooms")
    assert question.text == "Which rooms of “repaint my flat” are involved?"
    assert question.suggestions == ["all of them", "just the kitchen"]
    answered = AnswersRecorded(
        **_env(draft.aggregate_id, "answers"),
        answers=[Answer(question_id=question.question_id, text="just the kitchen")],
    )
    await store.append(
        [answered, ThreadCompleted(**_env(draft.aggregate_id, "completed"), final_draft_number=2, reason="answered")]
    )

    async def measured():
        reply = await nc.request(subjects.QUERY_TEMPLATES, msgspec.json.encode(TemplatesQuery()), timeout=5)
        views = {v.template_id: v for v in msgspec.json.decode(reply.data, type=TemplatesReply).templates}
        return views if views["scope-rooms"].times_answered == 1 else None

    views = await wait_until(measured, timeout_s=20)
    assert views["scope-rooms"].answer_rate == 1.0 and views["scope-rooms"].mean_answer_time_s >= 0
    # Each template the closed thread asked has its measurement recorded in the log, as the learner answers it.
    asked = {q.template_id for q in proposal.questions}

    async def recorded():
        found = await stored_events(js, "hermes.evt.template.*.template_effectiveness_updated")
        return found if {e.aggregate_id for e in found} == asked else None

    updates = await wait_until(recorded, timeout_s=20)
    assert len(updates) == len(asked)
    for update in updates:
        assert (update.cause, update.thread_id, update.causation_id) == (
            "thread_closed",
            draft.aggregate_id,
            derived_id(draft.aggregate_id, "completed"),
        )
        shown = msgspec.to_builtins(views[update.aggregate_id])
        assert {k: shown[k] for k in EFFECTIVENESS} == {k: getattr(update, k) for k in EFFECTIVENESS}
    assert (await stored_events(js, "hermes.evt.template.scope-rooms.template_effectiveness_updated"))[
        0
    ].times_answered == 1

    # Deactivated: never asked again, still listed on request.
    off = await control(nc, {"op": "deactivate", "template_id": "scope-rooms", "reason": "too narrow"})
    assert msgspec.convert(off, TemplatesReply).templates[0].active is False
    _, draft2 = await open_and_present(store, "help me repaint my flat")
    proposal2 = await wait_until(lambda: _proposal(js, draft2.aggregate_id), timeout_s=20)
    assert "scope-rooms" not in [q.template_id for q in proposal2.questions]
    changes = await stored_events(js, "hermes.evt.template.scope-rooms.>")
    assert [e.type_name() for e in changes] == [
        "template_added",
        "template_effectiveness_updated",
        "template_deactivated",
    ]

    # The read model is the log's: a rebuild from an empty database gives the same templates and statistics.
    before = learner.dump()
    causes = _rows(learner.db, "template_effectiveness_causes")
    learner.stop()
    for suffix in ("", "-wal", "-shm"):  # the whole database, its write-ahead log included
        Path(f"{learner.db}{suffix}").unlink(missing_ok=True)
    learner.start()
    await wait_until(lambda: learner.proc.logged_since(0, "learner_started"), timeout_s=30)
    assert learner.dump()["question_templates"] == before["question_templates"]
    assert learner.dump()["template_stats"] == before["template_stats"]
    assert _rows(learner.db, "template_effectiveness_causes") == causes and len(causes) == len(asked)


async def _proposal(js, thread_id: str) -> QuestionsProposed | None:
    found = await stored_events(js, subjects.thread_event(thread_id, QuestionsProposed))
    return found[0] if found else None


def test_exploration_never_makes_a_question_worth_asking():
    """The bonus ranks among questions worth the user's time; one below ``min_value`` stays unasked however
    long the history grows."""
    weak = T("a-weak", "scope", "Anything else about {topic}?", prior_improvement=0.04, time_cost_s=15)
    stats = {"other": domain.TemplateStats(times_asked=10_000, times_answered=5_000)}
    for exploration in (0.0, 0.5, 5.0):
        decision = choose("plan a garden", cap=3, stats=stats, templates=[weak], exploration=exploration)
        assert decision.questions == [], exploration
    strong = T("b-strong", "scope", "How big is {topic}?", prior_improvement=0.9, time_cost_s=15)
    [question] = choose("plan a garden", cap=3, stats=stats, templates=[weak, strong]).questions
    # The stored value is the question's worth, without the bonus.
    assert question.expected_value == domain.expected_value(
        strong, "plan a garden", domain.clarity("plan a garden"), domain.quality_issues("plan a garden"), None
    )


def test_a_rebuild_gives_the_same_templates_and_trends(tmp_path):
    """Deactivating a seed keeps it following the code's seeds, so a rebuild (seeds first, then the log) ends
    with the same rows; trends are read in an order that ties in time cannot change."""
    at = utcnow()
    events = [TemplateDeactivated(**_env("scope-focus", "off"))]
    for n in range(24):  # 24 threads closing at the same instant: the trend's order must not depend on storage
        thread, q = (
            f"t{n:02d}",
            Question(question_id=f"t{n:02d}-q", template_id="scope-size", category="scope", text="?"),
        )
        events += [
            ThreadOpened(**_env(thread, "opened", at), idea="plan a garden"),
            QuestionsProposed(**_env(thread, "proposed", at), questions=[q], idea_type="planning", clarity=0.2),
        ]
        if n >= 12:
            events.append(
                AnswersRecorded(
                    **_env(thread, "answered", at), answers=[Answer(question_id=q.question_id, text="small")]
                )
            )
        events.append(ThreadCompleted(**_env(thread, "done", at), final_draft_number=2, reason="answered"))
    batch = _batch(events)
    newer_seeds = tuple(
        t
        if t.template_id != "scope-focus"
        else T(
            t.template_id,
            t.category,
            "Which single part of {topic} matters most?",
            t.suggestions,
            t.idea_types,
            t.triggers,
            t.prior_improvement,
            t.time_cost_s,
        )
        for t in SEED_TEMPLATES
    )

    def build(name: str, chunks: int, seeds_before, seeds_after) -> list:
        engine = tables.make_engine(f"sqlite:///{tmp_path / name}")
        with Session(engine) as session:
            seeding.seed_templates(session, seeds_before)
        size = -(-len(batch) // chunks)
        for start in range(0, len(batch), size):
            readmodel.apply_batch(engine, batch[start : start + size])
        with Session(engine) as session:
            seeding.seed_templates(session, seeds_after)  # the next start-up, with the code's seeds then
            views = queries.template_views(session, include_inactive=True)
        engine.dispose()
        return views

    running = build("running.db", 7, SEED_TEMPLATES, newer_seeds)  # built over time, then a new version starts
    rebuilt = build("rebuilt.db", 1, newer_seeds, newer_seeds)  # that version rebuilding from the log at once
    assert running == rebuilt
    views = {v.template_id: v for v in rebuilt}
    assert views["scope-focus"].text.startswith("Which single part") and not views["scope-focus"].active
    assert views["scope-size"].trend == "improving" and views["scope-size"].answer_rate == 0.5

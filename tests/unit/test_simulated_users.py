"""The simulated users of ``bench/learning_eval.py`` (tests/fakes/simulated_users.py): varied, consistent, and
read by the learner the way they mean it (the classic population); the open population's facts, wordings, groups
and the questions they answer; and the bench's pure helpers (windows, claims, prompts, wrong assumptions)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fakes.simulated_users import (
    ASKS,
    CONSTRAINTS,
    GROUPS,
    IDEA_GROUPS,
    IDEAS,
    NAMED,
    OPEN_POOL,
    Fact,
    OpenProfile,
    Profile,
    faithful_reply,
    group_of,
    ideas_for,
    open_population,
    population,
)

from hermes_proto.events import Assumption, ChatMessage, JobQueued

from hermes_learner.preferences import observe
from hermes_orchestrator import domain as orchestrator

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import learning_eval as le  # noqa: E402  (bench/ is not a package)


def test_the_population_is_varied_and_the_same_for_the_same_seed():
    people = population(12)
    assert people == population(12) and people != population(12, seed=8)
    assert len({(p.depth, p.style) for p in people[:9]}) == 9  # every combination of depth and style
    assert all(3 <= len(p.constraints) <= 5 for p in people)
    assert {len(p.constraints) for p in people} == {3, 4, 5}
    assert {k for p in people for k in p.constraints} == set(CONSTRAINTS)
    assert len({p.user_id for p in people}) == 12


def test_each_user_has_its_own_idea_order_without_repeats_inside_a_cycle():
    a, b = population(2)
    ideas = ideas_for(a, 30)
    assert len(ideas) == 30 and len(set(ideas)) == 30 and ideas != ideas_for(b, 30)
    assert ideas_for(a, 2 * len(IDEAS))[len(IDEAS) :] != ideas[: len(IDEAS)]  # the next cycle is shuffled anew


def test_the_learner_reads_every_answer_as_the_facts_the_user_meant():
    for person in population(20):
        seen = {
            (o.category, o.key): o.value
            for category in ("scope", "context", "constraint")
            for o in observe(person.answer(category, "Who is it for?") or "")
        }
        assert seen.get(("depth", "depth")) == person.depth
        assert seen.get(("style", "style")) == person.style
        constraints = {key: value for (category, key), value in seen.items() if category == "constraint"}
        assert set(constraints) == set(person.constraints), person
        for key, (_, marker) in person.constraints.items():
            assert marker in constraints[key]


def test_questions_outside_the_profile_are_ignored():
    person = population(1)[0]
    assert person.answer("intent", "What result do you want?") is None
    assert person.answer("success", "How will you know it turned out well?") is None
    assert "audience" in person.constraints
    said = person.constraints["audience"][0]
    assert said not in person.answer("context", "What is your starting point?")  # no audience unless asked who
    assert said in person.answer("context", "Who is it for?")
    assert Profile("x", "overview", "casual").answer("constraint", "Any limits?") is None


def test_a_rating_counts_the_facts_a_text_honours():
    person = Profile(
        "x", "detailed", "casual", {"budget": CONSTRAINTS["budget"][0], "language": CONSTRAINTS["language"][2]}
    )
    everything = "A detailed, casual plan under 500 euros, in German."
    assert person.honoured(everything) == 4 and person.rating(everything) == 5
    assert person.honoured("Plan a trip to Germany for 5000 euros") == 0 and person.rating("") == 1
    assert person.rating("detailed and casual") == 3
    assert not any(marker in idea.lower() for idea in IDEAS for p in population(20) for marker in p.facts().values())


def test_the_faithful_model_restates_what_the_prompt_asks_for():
    prefs = [Assumption(preference_id="p", category="depth", key="depth", value="detailed", confidence=0.8)]
    draft1 = faithful_reply(
        {
            "messages": [
                {"role": m.role, "content": m.content} for m in orchestrator.draft1_messages("plan a picnic", prefs)
            ]
        }
    )
    assert draft1 == "A plan for plan a picnic. Following: Depth: detailed."
    draft2 = faithful_reply(
        {
            "messages": [
                {"role": m.role, "content": m.content}
                for m in orchestrator.draft2_messages(
                    "plan a picnic", draft1, [("Who is it for?", "for the kids")], prefs
                )
            ]
        }
    )
    assert draft2.startswith("A plan for plan a picnic.") and "Depth: detailed" in draft2
    assert "Who is it for? for the kids" in draft2
    assert faithful_reply({"messages": []}) == "A plan for ."


# ---- the open population ----------------------------------------------------------------------------------------

TIME = [
    "By when do you need it, and how much time can you spend on it?",
    "By when do you need it, and how much time are you able to devote to it?",
    "When do you need it, and how much time do you have?",
    "What is the deadline, and how many hours can you allocate?",
]
MUST = [
    "Is there anything it must include, or must avoid?",
    "Is there anything it must include, or anything it must avoid?",
    "Anything it has to have, or must skip?",
    "What are the hard requirements and exclusions?",
]
STACK = [
    "Which language, framework or platform must it use?",
    "Which language, framework or platform is it required to use?",
    "Any language or framework it has to use?",
    "Which language, framework, runtime or platform is required?",
]
ASKED = {
    "schedule": TIME,
    "deadline": TIME,
    "situation": [
        "What is your starting point for plan a picnic?",
        "Could you describe your starting point for plan a picnic?",
        "Where are you starting from with plan a picnic?",
        "What is the current state of plan a picnic?",
    ],
    "size": [
        "How big should this be: a quick first version or a complete solution?",
        "How large should this be: a quick first version or a complete solution?",
        "Quick first version or the full thing?",
        "What scope: a minimal first version or a complete solution?",
    ],
    "register": MUST,
    "diet": MUST,
    "tools": MUST,
    "stack": MUST + STACK,
    "hosting": MUST + [q for q in STACK if "platform" in q],
    "audience": [
        "Who is it for?",
        "Could you tell me who it is intended for?",
        "Who's it for?",
        "Who is the target audience?",
    ],
    "length": [
        "How long should it be?",
        "What length would you like it to be?",
        "How long do you want it?",
        "What is the target length (words or pages)?",
    ],
    "format": [
        "What form should the result take?",
        "In what form would you like to receive the result?",
        "What should the result look like?",
        "What output format is required?",
    ],
    "experience": [
        "How much do you already know about this?",
        "How much do you already know about this subject?",
        "How much do you know about this already?",
        "What is your current level of expertise in this area?",
    ],
    "place": [
        "Where will this happen (place, climate, space available)?",
        "Where will this take place (location, climate, space available)?",
        "Where's this happening (place, weather, space)?",
        "What are the site conditions (location, climate, available space)?",
    ],
    "budget": [
        "What budget do you have for plan a picnic?",
        "Could you tell me what budget you have available for plan a picnic?",
        "How much can you spend on plan a picnic?",
        "What is the budget ceiling for plan a picnic?",
    ],
}
"""Fact key → the seed questions (every wording, ``{topic}`` filled) an open user answers with it."""
IGNORED = [
    "What result do you want from plan a picnic?",
    "What do you want to get out of plan a picnic?",
    "Why does this matter to you right now: what problem should it solve?",
    "Which options are you choosing between?",
    "Is this new code, a change to existing code, or a bug to fix?",
    "How will you know plan a picnic turned out well?",
    "What are the acceptance criteria for plan a picnic?",
    "Is there a number you want to reach (words, users, kilograms, hours...)?",
    "Which part of plan a picnic matters most to start with?",
    "How deep should it go: an overview or an in-depth analysis?",
    "Quick overview or a deep dive?",
]
"""Seed questions about the idea itself: no open fact answers them."""


def test_the_open_population_is_the_same_for_the_same_seed():
    people = open_population(12)
    assert people == open_population(12) and people != open_population(12, seed=8)
    assert len({p.user_id for p in people}) == 12
    assert not {p.user_id for p in people} & {p.user_id for p in population(12)}
    person = people[0]
    asked = [(idea, i, q) for i, idea in enumerate(IDEAS, start=1) for q in TIME + MUST]
    assert [person.answer(q, idea, i) for idea, i, q in asked] == [
        open_population(12)[0].answer(q, idea, i) for idea, i, q in asked
    ]


def test_every_idea_has_a_group():
    assert set(IDEA_GROUPS) == set(IDEAS) and set(IDEA_GROUPS.values()) == set(GROUPS)
    assert group_of("write a speech for a wedding") == "writing" and group_of("plan a picnic") == "planning"
    assert group_of("write a script to rename photos") == "tech" and group_of("learn basic Spanish") == "learning"


def test_open_users_hold_four_to_six_facts_mostly_outside_the_learners_vocabulary():
    for person in open_population(40):
        for group in GROUPS:
            keys = [f.key for f in person.facts_for(group)]
            assert 4 <= len(keys) <= 6 and len(set(keys)) == len(keys), (person.user_id, group)
            assert 2 * sum(1 for k in keys if k not in NAMED) >= len(keys), (person.user_id, group)
    sizes = {len(p.facts_for(g)) for p in open_population(40) for g in GROUPS}
    assert sizes == {4, 5, 6}
    assert {f.key for p in open_population(40) for g in GROUPS for f in p.facts_for(g)} == set(OPEN_POOL)


def test_the_wordings_of_a_fact_differ_but_all_contain_its_marker():
    values = [value for families in OPEN_POOL.values() for vals in families.values() for value in vals]
    markers = [marker for _, marker in values]
    assert len(set(markers)) == len(markers)  # one fact's marker never honours another's
    for said, marker in values:
        assert 2 <= len(said) <= 3 and len(set(said)) == len(said), said
        assert marker == marker.lower()
        assert all(Fact("k", "", said, marker).honoured_by(s) for s in said), (said, marker)
    texts = IDEAS + tuple(q for qs in ASKED.values() for q in qs) + tuple(IGNORED)
    assert not any(Fact("k", "", (), m).honoured_by(t) for m in markers for t in texts)
    person = open_population(1)[0]
    fact = person.facts_for("planning")[0]
    said = {person.wording(fact, thread) for thread in range(1, 31)}
    assert said == set(fact.said)  # across threads the user uses every wording of the same value
    assert person.wording(fact, 3) == person.wording(fact, 3)


def test_some_facts_depend_on_the_idea_group():
    for person in open_population(20):
        by_group = {g: {f.key: f.marker for f in person.facts_for(g)} for g in GROUPS}
        assert by_group["writing"]["register"] != by_group["planning"]["register"]  # every user's register differs
        assert by_group["planning"]["register"] == by_group["tech"]["register"] == by_group["learning"]["register"]
        assert "stack" not in by_group["planning"] and "place" not in by_group["tech"]
    audiences = [
        (w["audience"], t["audience"])
        for p in open_population(40)
        if "audience" in (w := {f.key: f.marker for f in p.facts_for("writing")})
        and "audience" in (t := {f.key: f.marker for f in p.facts_for("tech")})
    ]
    assert audiences and all(w != t for w, t in audiences)


def test_each_fact_answers_the_questions_that_ask_it_and_no_other():
    everything = {q for qs in ASKED.values() for q in qs} | set(IGNORED)
    assert set(ASKS) == set(ASKED) == set(OPEN_POOL)
    for key, pattern in ASKS.items():
        fact = Fact(key, pattern, ("x",), "x")
        assert {q for q in everything if fact.answers(q)} == set(ASKED[key]), key


def test_an_open_user_answers_with_the_facts_a_question_asks_and_ignores_the_rest():
    for person in open_population(20):
        for idea in ("plan a picnic", "write a cover letter", "set up a podcast", "learn basic Spanish"):
            facts = person.facts_for(group_of(idea))
            for question in IGNORED:
                assert person.answer(question, idea, 1) is None
            for questions in ASKED.values():
                for question in questions:
                    expected = [person.wording(f, 4) for f in facts if question in ASKED[f.key]]
                    assert person.answer(question, idea, 4) == ("; ".join(expected) or None), (question, idea)
    writer = OpenProfile(
        "w",
        7,
        {
            "writing": (Fact("audience", ASKS["audience"], ("my readers",), "readers"),),
            "tech": (Fact("audience", ASKS["audience"], ("personal use",), "personal use"),),
        },
    )
    assert writer.answer("Who's it for?", "write a cover letter", 1) == "my readers"
    assert writer.answer("Who's it for?", "set up a podcast", 1) == "personal use"
    assert writer.answer("How long should it be?", "write a cover letter", 1) is None


def test_an_open_user_rates_by_the_facts_of_the_idea_in_hand():
    person = OpenProfile(
        "x",
        7,
        {
            "writing": (
                Fact("audience", ASKS["audience"], ("my readers",), "readers"),
                Fact("length", ASKS["length"], ("two pages at most",), "two pages"),
            ),
            "tech": (
                Fact("audience", ASKS["audience"], ("personal use",), "personal use"),
                Fact("stack", ASKS["stack"], ("Go and SQLite",), "sqlite"),
            ),
        },
    )
    text = "A plan for it. Following: Audience: for my readers; Length: at most two pages."
    assert person.honoured(text, "write a cover letter") == 2 and person.rating(text, "write a cover letter") == 5
    assert person.honoured(text, "set up a podcast") == 0 and person.rating(text, "set up a podcast") == 1
    on = person.on("set up a podcast", 3)
    assert on.user_id == "x" and on.facts() == {"audience": "personal use", "stack": "sqlite"}
    assert on.answer("context", "Who is the target audience?") == "personal use"
    assert on.rating("Go with SQLite, for personal use only") == 5 and on.honoured("SQLite") == 1


# ---- bench/learning_eval.py's pure helpers ----------------------------------------------------------------------


def _row(index: int, mode: str = "learning", **kw) -> le.Row:
    fields = dict(
        population="open",
        mode=mode,
        user_id="u",
        thread_index=index,
        idea="plan a picnic",
        idea_type="planning",
        questions=0,
        answers=0,
        assumptions_applied=0,
        wrong_assumptions=0,
        facts=5,
        facts_in_draft1_prompt=0,
        facts_in_final_prompt=0,
        facts_in_final_draft=0,
        rating=1,
        final_draft_number=1,
        seconds=1.0,
    )
    return le.Row(**(fields | kw))


def _run(first: dict, last: dict, mode: str = "learning", threads: int = 20) -> list:
    """Two users' rows: threads 1-10 with ``first``'s fields, 11-20 with ``last``'s."""
    return [_row(i, mode, user_id=u, **(first if i <= 10 else last)) for u in ("a", "b") for i in range(1, threads + 1)]


def test_windows_average_shares_and_pool_wrong_assumptions():
    rows = [
        _row(1, facts_in_draft1_prompt=1, facts_in_final_prompt=5, assumptions_applied=4, wrong_assumptions=1),
        _row(1, user_id="b", facts=4, facts_in_draft1_prompt=2, facts_in_final_prompt=2),
        _row(2, questions=2, assumptions_applied=0),
    ]
    assert le.aggregate(rows[:2], "draft1_share") == (0.2 + 0.5) / 2
    assert le.aggregate(rows[:2], "final_share") == (1.0 + 0.5) / 2
    assert le.aggregate(rows, "wrong") == 1 / 4  # pooled over the window, not a mean of per-thread shares
    assert le.aggregate(rows[2:], "wrong") == 0.0  # nothing applied: nothing wrong
    assert le.aggregate([_row(1, facts=0)], "final_share") == 0.0
    assert le.curve(rows, "questions") == [0, 2]
    run = _run({"questions": 3}, {"questions": 1})
    assert le.window(run, "questions", True) == 3 and le.window(run, "questions", False) == 1
    table = le.summary("open", {"learning": run})
    assert [(r["population"], r["mode"], r["threads"], r["questions"]) for r in table] == [
        ("open", "learning", "first 10", 3),
        ("open", "learning", "last 10", 1),
    ]
    assert set(table[0]) == {"population", "mode", "threads", "seconds", *(m for m, _ in le.METRICS)}


def test_the_open_claims_hold_only_when_every_target_is_met():
    good = {"questions": 1, "facts_in_final_prompt": 5, "assumptions_applied": 5, "wrong_assumptions": 0}
    base = _run({"questions": 3, "facts_in_final_prompt": 2}, {"questions": 3, "facts_in_final_prompt": 2}, "baseline")
    learn = _run({"questions": 3}, good)
    checks = le.claims("open", {"learning": learn, "baseline": base})
    assert len(checks) == 6 and all(holds for _, holds in checks)
    assert all(text.startswith("open: ") for text, _ in checks)
    for bad in ({"questions": 2}, {"facts_in_final_prompt": 3}, {"wrong_assumptions": 1}):
        failing = [t for t, holds in le.open_claims({"learning": _run({}, good | bad), "baseline": base}) if not holds]
        assert failing, bad
    assert len(le.open_claims({"learning": learn})) == 3 and le.open_claims({"baseline": base}) == []


def test_the_classic_claims_are_those_of_before():
    learn = _run({"questions": 3, "facts_in_draft1_prompt": 1}, {"questions": 1, "facts_in_draft1_prompt": 4})
    base = _run(
        {"questions": 3, "facts_in_draft1_prompt": 1}, {"questions": 3, "facts_in_draft1_prompt": 1}, "baseline"
    )
    checks = le.claims("classic", {"learning": learn, "baseline": base})
    assert len(checks) == 4 and all(holds for _, holds in checks)
    assert checks[0][0] == "classic: learning: fewer questions in the last ten threads than in the first ten"
    assert not any(holds for _, holds in le.classic_claims({"learning": base, "baseline": base}))


def test_prompts_are_read_from_the_queued_jobs():
    now = datetime.now(UTC)

    def queued(kind: str, text: str) -> JobQueued:
        return JobQueued(
            event_id=text,
            aggregate_id="t",
            occurred_at=now,
            correlation_id="c",
            causation_id="c",
            job_id=text,
            kind=kind,
            messages=[ChatMessage(role="system", content="sys"), ChatMessage(role="user", content=text)],
        )

    events = [queued("draft1", "one"), queued("classify", "x"), queued("draft2", "two"), queued("draft2", "three")]
    assert le.prompt_of(events, "draft1") == "sys\none"
    assert le.prompt_of(events, le.final_kind(2), last=True) == "sys\nthree"
    assert le.final_kind(1) == le.final_kind(None) == "draft1"
    with pytest.raises(LookupError):
        le.prompt_of(events[:2], "draft2")


def test_a_wrong_assumption_honours_none_of_the_ideas_facts():
    person = open_population(1)[0]
    writing = le.person(person, "write a cover letter", 1)
    tech = le.person(person, "set up a podcast", 1)
    register = {g: next(f for f in person.facts_for(g) if f.key == "register") for g in ("writing", "tech")}
    applied = [{"value": register["writing"].said[0]}, {"value": "something else"}]
    assert le.wrong_assumptions(writing, applied) == 1 and le.wrong_assumptions(tech, applied) == 2
    classic = population(1)[0]
    assert le.person(classic, "plan a picnic", 1) is classic
    assert le.wrong_assumptions(classic, [{"value": classic.depth}, {"value": None}]) == 1


def test_the_bench_command_line_and_outputs():
    assert le.parse_args([]).populations == ("classic", "open")
    assert le.parse_args(["--population", "open"]).populations == ("open",)
    out = Path("/r")
    assert le.curves_path(out, "classic") == out / "learning_curves.png"
    assert le.curves_path(out, "open") == out / "learning_curves_open.png"
    assert [type(u).__name__ for u in le.make_population("open", 2, 7)] == ["OpenProfile", "OpenProfile"]
    assert le.make_population("classic", 2, 7) == population(2, 7)

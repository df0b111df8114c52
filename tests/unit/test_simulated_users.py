"""The simulated users of ``bench/learning_eval.py`` (tests/fakes/simulated_users.py): varied, consistent, and
read by the learner the way they mean it."""

from __future__ import annotations

from fakes.simulated_users import CONSTRAINTS, IDEAS, Profile, faithful_reply, ideas_for, population

from hermes_proto.events import Assumption

from hermes_learner.preferences import observe
from hermes_orchestrator import domain as orchestrator


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

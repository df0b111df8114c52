"""Learned facts per slot, patterns and ``POST /api/threads/{id}/optimize`` over the real bus: the real gateway,
orchestrator, learner, router and talos-edge as processes on a real NATS server (the stack of
``test_learn_preferences``), driven over real HTTP by a simulated user who, for planning ideas, never answers context
questions, always answers constraint questions "keep it simple", wants detailed answers (a depth preference) and
answers the rest differently each time.

Proves: each slot is learned from the answers to its own questions (a constraint slot "keep it simple", a context
slot left unanswered) and a question is no longer asked exactly when its slot is known; patterns are still measured
and listed; optimize answers a waiting thread's open questions from the facts of their slots, says which, and the
thread completes without Hermes learning from its own answers; nothing applicable leaves the thread waiting;
404/409; with learning disabled there are no patterns or facts and optimize applies nothing.
"""

from __future__ import annotations

from conftest import stored_events, thread_events, wait_until
from test_learn_preferences import IDEAS, Stack, stack, unlearning  # noqa: F401 (the same fixtures)

from hermes_proto.events import PatternValidated, PreferenceLearned, QuestionsProposed
from hermes_proto.facts import UNANSWERED

from hermes_learner.templates import SEED_SLOTS

PROFILE = {"constraint": "keep it simple", "scope": "detailed, step by step please", "context": ""}
"""What the simulated user answers by category ("": leaves it open); other categories get a new answer each time."""


def answer(question: dict) -> str:
    return PROFILE.get(question["category"], f"about {question['question_id'][:6]}")


def categories(thread: dict) -> set[str]:
    return {q["category"] for q in thread["questions"]}


def slots(thread: dict) -> set[str]:
    assert all(q["slot"] == SEED_SLOTS[q["template_id"]] for q in thread["questions"])
    return {q["slot"] for q in thread["questions"]}


async def patterns(stack: Stack, applied_only: bool = False) -> dict[str, dict]:
    data = await stack.call(
        "GET", "/api/learn/patterns", params={"user_id": "local", "applied_only": str(applied_only).lower()}
    )
    assert (data["validation_threshold"], data["min_validations"]) == (0.8, 3)
    return {p["pattern_id"]: p for p in data["patterns"]}


async def known(stack: Stack) -> dict[str, str]:
    """Slot → the value of the user's applied fact for planning ideas (normalised; ``(unanswered)`` included)."""
    data = await stack.call("GET", "/api/learn/preferences", params={"user_id": "local"})
    return {p["key"]: p["normalized"] for p in data["preferences"] if p["applied"] and p["scope"] == "type:planning"}


async def learned_from(js, thread_id: str) -> list:
    """The pattern and preference events whose evidence came from ``thread_id``."""
    events = await stored_events(js, "hermes.evt.pattern.>") + await stored_events(js, "hermes.evt.preference.>")
    return [e for e in events if e.thread_id == thread_id]


async def test_slots_are_learned_and_optimize_answers_a_waiting_thread(stack: Stack, js_client) -> None:
    _, js = js_client
    held = await stack.asked(IDEAS[0])  # asked before anything was learned; left waiting
    assert held["status"] == "awaiting_answers"
    assert {"context", "constraint", "scope"} <= categories(held), held["questions"]
    ideas = iter(IDEAS[1:])
    for _ in range(6):
        await stack.run_thread(next(ideas), answer)
        facts = await known(stack)
        if facts.get("depth") and "keep simple" in facts.values() and UNANSWERED in facts.values():
            break
    assert facts["depth"] == "detailed", facts
    constraint = {s for s, v in facts.items() if v == "keep simple"}
    unanswered = {s for s, v in facts.items() if v == UNANSWERED}
    assert constraint <= {"budget", "timing", "tech_stack", "must_avoid"} and constraint, facts
    assert unanswered & {"audience", "experience", "situation", "location", "length", "focus"}, facts
    assert await patterns(stack)  # patterns are still measured and listed
    assert [e for e in await stored_events(js, "hermes.evt.pattern.>") if isinstance(e, PatternValidated)]

    # Applied: the next thread asks no question whose slot is known, whatever else its category holds.
    facts = await known(stack)
    nxt, prompt = await stack.run_thread(next(ideas), answer)
    assert not slots(nxt) & set(facts), (nxt["questions"], facts)
    [proposed] = [e for e in await thread_events(js, nxt["thread_id"]) if isinstance(e, QuestionsProposed)]
    assert {a.key for a in proposed.assumptions} == {s for s, v in facts.items() if v != UNANSWERED}
    assert "- Depth: detailed" in prompt and "keep it simple" in prompt
    assert "the user leaves them unanswered" in proposed.reason

    # Optimize the thread left waiting: every open question whose slot is known is settled, and says by what.
    before, facts = await stack.preferences(), await known(stack)
    data = await stack.call("POST", f"/api/threads/{held['thread_id']}/optimize")
    by_slot = {q["question_id"]: SEED_SLOTS[q["template_id"]] for q in held["questions"]}
    settled = {(by_slot[o["question_id"]], o["kind"], o["answer"]) for o in data["applied"]}
    expected = {
        (slot, "skip_question", None) if facts[slot] == UNANSWERED else (slot, "preference", None)
        for slot in set(by_slot.values()) & set(facts)
    }
    assert {(s, k) for s, k, _ in settled} == {(s, k) for s, k, _ in expected}, data
    assert ("depth", "preference", "detailed") in settled
    assert data["continued"] is True and data["thread_id"] == held["thread_id"]
    done = await stack.completed(held["thread_id"])
    assert done["final_draft_number"] == 2
    draft2 = stack.model.chat_requests()[-1].body["messages"][-1]["content"]
    assert "detailed" in draft2

    # Nothing applicable: the thread keeps waiting. Answering it then lets it be learned from.
    last = await stack.asked(next(ideas))
    if last["status"] == "awaiting_answers" and not slots(last) & set(await known(stack)):
        data = await stack.call("POST", f"/api/threads/{last['thread_id']}/optimize")
        assert (data["applied"], data["continued"]) == ([], False)
        assert (await stack.thread(last["thread_id"]))["status"] == "awaiting_answers"
        await stack.call(
            "POST",
            f"/api/threads/{last['thread_id']}/continue",
            202,
            json={"answers": {q["question_id"]: answer(q) for q in last["questions"]}},
        )
        await stack.completed(last["thread_id"])
        await wait_until(lambda: learned_from(js, last["thread_id"]), timeout_s=15)
    # Hermes did not learn from its own answers: nothing from the optimized thread.
    assert await learned_from(js, held["thread_id"]) == []
    after = await stack.preferences()
    assert after[("depth", "depth")]["observations"] >= before[("depth", "depth")]["observations"]

    # Errors: an unknown thread, a thread no longer waiting.
    assert (await stack.call("POST", f"/api/threads/{'f' * 32}/optimize", 404))["code"] == "thread_not_found"
    error = await stack.call("POST", f"/api/threads/{held['thread_id']}/optimize", 409)
    assert error["code"] == "not_awaiting_answers"
    assert (await stack.call("POST", "/api/threads/bad.id/optimize", 400))["code"] == "invalid_id"
    assert (await stack.call("GET", "/api/learn/patterns", 422, params={"user_id": "no spaces"}))[
        "code"
    ] == "validation_failed"


async def test_with_learning_disabled_nothing_is_learned_or_applied(unlearning: Stack, js_client) -> None:
    _, js = js_client
    for idea in IDEAS[1:5]:
        asked, _ = await unlearning.run_thread(idea, answer)
        assert "context" in categories(asked)
    assert await patterns(unlearning) == {}
    held = await unlearning.asked(IDEAS[0])
    data = await unlearning.call("POST", f"/api/threads/{held['thread_id']}/optimize")
    assert (data["applied"], data["continued"], data["reason"]) == ([], False, "learning disabled")
    assert (await unlearning.thread(held["thread_id"]))["status"] == "awaiting_answers"
    assert [e for e in await stored_events(js, "hermes.evt.pattern.>") if isinstance(e, PatternValidated)] == []
    assert [e for e in await stored_events(js, "hermes.evt.preference.>") if isinstance(e, PreferenceLearned)] == []

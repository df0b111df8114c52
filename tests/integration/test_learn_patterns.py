"""Learned patterns and ``POST /api/threads/{id}/optimize`` over the real bus: the real gateway, orchestrator, learner,
router and talos-edge as processes on a real NATS server (the stack of ``test_learn_preferences``), driven over real
HTTP by a simulated user who, for planning ideas, never answers context questions, always answers constraint
questions "keep it simple", wants detailed answers (a depth preference) and answers the rest differently each time.

Proves: both patterns are learned from closed threads (``PatternValidated``) and applied (context not asked,
constraint assumed); optimize answers a waiting thread's open questions from the learned preference and pattern,
says which, and the thread completes without Hermes learning from its own answers; nothing applicable leaves the
thread waiting; 404/409; with learning disabled there are no patterns and optimize applies nothing.
"""

from __future__ import annotations

from conftest import stored_events, thread_events, wait_until
from test_learn_preferences import IDEAS, Stack, stack, unlearning  # noqa: F401 (the same fixtures)

from hermes_proto.events import PatternValidated, PreferenceLearned, QuestionsProposed, pattern_id

PROFILE = {"constraint": "keep it simple", "scope": "detailed, step by step please", "context": ""}
"""What the simulated user answers by category ("": leaves it open); other categories get a new answer each time."""
CONTEXT_SKIP = pattern_id("local", "skip_question", "planning", "context")
CONSTRAINT_SAME = pattern_id("local", "recurring_answer", "planning", "constraint")


def answer(question: dict) -> str:
    return PROFILE.get(question["category"], f"about {question['question_id'][:6]}")


def categories(thread: dict) -> set[str]:
    return {q["category"] for q in thread["questions"]}


async def patterns(stack: Stack, applied_only: bool = False) -> dict[str, dict]:
    data = await stack.call(
        "GET", "/api/learn/patterns", params={"user_id": "local", "applied_only": str(applied_only).lower()}
    )
    assert (data["validation_threshold"], data["min_validations"]) == (0.8, 3)
    return {p["pattern_id"]: p for p in data["patterns"]}


async def learned_from(js, thread_id: str) -> list:
    """The pattern and preference events whose evidence came from ``thread_id``."""
    events = await stored_events(js, "hermes.evt.pattern.>") + await stored_events(js, "hermes.evt.preference.>")
    return [e for e in events if e.thread_id == thread_id]


async def test_patterns_are_learned_applied_and_optimize_answers_a_waiting_thread(stack: Stack, js_client) -> None:
    _, js = js_client
    held = await stack.asked(IDEAS[0])  # asked before anything was learned; left waiting
    assert held["status"] == "awaiting_answers"
    assert {"context", "constraint", "scope"} <= categories(held), held["questions"]

    ideas, given = iter(IDEAS[1:]), []

    def answering(question: dict) -> str:
        given.append(question["category"])
        return answer(question)

    for threads in range(1, 7):  # noqa: B007 (the last count is checked after the loop)
        await stack.run_thread(next(ideas), answering)
        learned = await patterns(stack, applied_only=True)
        if {CONTEXT_SKIP, CONSTRAINT_SAME} <= set(learned):
            break
    assert threads == 4, learned  # 3 silences give (3 + 1) / (3 + 2) = 0.8; the first answer only seeds the value
    skip, same = learned[CONTEXT_SKIP], learned[CONSTRAINT_SAME]
    assert skip["validation_count"] == skip["success_count"] >= 3
    assert skip["confidence"] == round((skip["success_count"] + 1) / (skip["validation_count"] + 2), 4)
    assert skip["recommended_actions"] == ["skip_category:context"] and skip["value"] is None
    assert (same["validation_count"], same["success_count"], same["confidence"]) == (3, 3, 0.8)
    assert same["values"] == {"keep it simple": given.count("constraint")} and same["value"] == "keep it simple"
    assert same["recommended_actions"] == ["assume:constraint=keep it simple"]
    assert set(learned) < set(await patterns(stack))  # the other patterns did not hold (answers varied)
    history = [e for e in await stored_events(js, f"hermes.evt.pattern.{CONSTRAINT_SAME}.>")]
    assert [(e.outcome, e.validation_count, e.applied) for e in history] == [
        ("seeded", 0, False),
        ("success", 1, False),
        ("success", 2, False),
        ("success", 3, True),
    ]

    # Applied: the next thread is not asked about context, and "keep it simple" is assumed for constraints.
    nxt, _ = await stack.run_thread(next(ideas), answer)
    assert not categories(nxt) & {"context", "constraint", "scope"}, nxt["questions"]
    [proposed] = [e for e in await thread_events(js, nxt["thread_id"]) if isinstance(e, QuestionsProposed)]
    assert proposed.skipped_categories == ["context"]
    assert [(a.source, a.pattern_id, a.value) for a in proposed.assumptions if a.source == "pattern"] == [
        ("pattern", CONSTRAINT_SAME, "keep it simple")
    ]
    assert "left context questions unanswered" in proposed.reason

    # Optimize the thread left waiting: depth from the preference, constraint from the pattern, context may stay open.
    before = (await patterns(stack), await stack.preferences())
    data = await stack.call("POST", f"/api/threads/{held['thread_id']}/optimize")
    by_category = {q["question_id"]: q["category"] for q in held["questions"]}
    settled = {(o["category"], o["kind"], o["answer"]) for o in data["applied"]}
    assert settled == {
        ("scope", "preference", "detailed"),
        ("constraint", "recurring_answer", "keep it simple"),
        ("context", "skip_question", None),
    }, data
    assert all(by_category[o["question_id"]] == o["category"] for o in data["applied"])
    assert [o["source_id"] for o in data["applied"] if o["kind"] == "recurring_answer"] == [CONSTRAINT_SAME]
    assert data["continued"] is True and data["thread_id"] == held["thread_id"]
    done = await stack.completed(held["thread_id"])
    assert done["final_draft_number"] == 2
    answered = {q["category"]: q["answer"] for q in done["questions"] if q["answer"]}
    assert answered.get("constraint") == "keep it simple" and answered.get("scope") == "detailed"
    draft2 = stack.model.chat_requests()[-1].body["messages"][-1]["content"]
    assert "keep it simple" in draft2 and "detailed" in draft2

    # Nothing applicable: the thread keeps waiting. Answering it then lets every earlier close be learned from.
    last = await stack.asked(next(ideas))
    assert last["status"] == "awaiting_answers" and categories(last) <= {"intent", "success"}
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
    # Hermes did not learn from its own answers: nothing from the optimized thread, counts unchanged.
    assert await learned_from(js, held["thread_id"]) == []
    after = (await patterns(stack), await stack.preferences())
    for pid in (CONTEXT_SKIP, CONSTRAINT_SAME):
        assert after[0][pid]["validation_count"] == before[0][pid]["validation_count"]
    assert {k: p["observations"] for k, p in after[1].items()} == {k: p["observations"] for k, p in before[1].items()}

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

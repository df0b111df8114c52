"""LLM classification of ideas over the real bus (issue 5): the real gateway, orchestrator, learner, router and
talos-edge as processes on a real NATS server, the edge in front of a loopback OpenAI-compatible model server whose
reply depends on the prompt (JSON for the learner's classify prompt, a plain draft otherwise).

Proves: with ``HERMES_CLASSIFICATION_ENABLE_LLM=true`` the learner's questions follow the model's reading of the
idea (a type the pattern rules would not give), the classify job is a job of the thread like the drafts (backend,
tokens) and the thread still completes normally; a model answer that does not parse leaves the decision to the
rules, and the reason says so; by default no classify job is queued at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from conftest import stored_events, wait_until
from fakes.llm_servers import Fault
from test_learn_preferences import Stack, make_stack

from hermes_proto import subjects
from hermes_proto.events import DraftPresented, JobQueued, QuestionsProposed
from hermes_proto.facts import category_of

from hermes_learner import ideas
from hermes_learner.classification import SYSTEM
from hermes_learner.extraction import SYSTEM as EXTRACT_SYSTEM

PLANNING_IDEA = "help me plan a vegetable garden on my balcony"
OTHER_IDEA = "help me plan a weekend away"
DRAFT = "A first draft of the plan."


def is_classify(body: dict) -> bool:
    return body["messages"][0]["content"] == SYSTEM


def is_extract(body: dict) -> bool:
    return body["messages"][0]["content"] == EXTRACT_SYSTEM


def answering(classify_reply: str):
    return lambda body: classify_reply if is_classify(body) else DRAFT


@pytest.fixture
async def llm_stack(bus_env, tmp_path) -> AsyncIterator[Stack]:
    async for s in make_stack(
        bus_env, tmp_path, HERMES_CLASSIFICATION_ENABLE_LLM="true", HERMES_CLASSIFICATION_TIMEOUT_SECONDS="20"
    ):
        yield s


async def proposed(js, thread_id: str) -> QuestionsProposed:
    (event,) = [
        e for e in await stored_events(js, subjects.thread_events(thread_id)) if isinstance(e, QuestionsProposed)
    ]
    return event


async def test_the_models_reading_decides_and_its_job_is_listed(llm_stack: Stack, js_client) -> None:
    _, js = js_client
    assert ideas.classify(PLANNING_IDEA) == "planning"  # what the rules would say
    llm_stack.model.respond = answering(
        json.dumps({"idea_type": "research", "issues": ["scope", "context"], "clarity": 0.3})
    )
    asked = await llm_stack.asked(PLANNING_IDEA)
    thread_id = asked["thread_id"]
    assert asked["status"] == "awaiting_answers" and asked["idea_type"] == "research"
    event = await proposed(js, thread_id)
    assert event.idea_type == "research" and event.clarity == 0.3 and "classified by llm" in event.reason
    assert "open issues: context, scope" in event.reason

    classify_calls = [r.body for r in llm_stack.model.chat_requests() if is_classify(r.body)]
    assert len(classify_calls) == 1 and classify_calls[0]["temperature"] == 0
    assert PLANNING_IDEA in classify_calls[0]["messages"][1]["content"]
    assert DRAFT in classify_calls[0]["messages"][1]["content"]

    answers = {q["question_id"]: "for my family, a short overview" for q in asked["questions"]}
    await llm_stack.call("POST", f"/api/threads/{thread_id}/continue", 202, json={"answers": answers})
    done = await llm_stack.completed(thread_id)
    assert done["draft2"] == DRAFT
    jobs = {j["kind"]: j for j in done["jobs"]}
    assert set(jobs) == {"draft1", "classify", "draft2"}
    assert jobs["classify"]["status"] == "completed" and jobs["classify"]["backend"] == "talos"
    assert jobs["classify"]["prompt_tokens"] > 0 and jobs["classify"]["completion_tokens"] > 0
    events = await stored_events(js, subjects.thread_events(thread_id))
    queued = [e for e in events if isinstance(e, JobQueued) and e.kind == "classify"]
    # the classification, then (when it was queued before the thread closed) the reading of the answers
    assert len(queued) in (1, 2) and queued[0].job_type == "analysis" and queued[0].max_tokens == 200
    drafts = [e for e in events if isinstance(e, DraftPresented)]
    assert [d.draft_number for d in drafts] == [1, 2]  # the classify result presented nothing
    assert queued[0].job_id not in {d.job_id for d in drafts}


async def test_an_unparsable_answer_leaves_the_decision_to_the_rules(llm_stack: Stack, js_client) -> None:
    _, js = js_client
    llm_stack.model.respond = answering("I think this is mostly about gardening, honestly.")
    asked = await llm_stack.asked(OTHER_IDEA)
    event = await proposed(js, asked["thread_id"])
    assert event.idea_type == ideas.classify(OTHER_IDEA) == "planning"
    assert event.clarity == ideas.clarity(OTHER_IDEA, DRAFT)
    assert "classified by rules (llm output invalid)" in event.reason
    assert len([r for r in llm_stack.model.chat_requests() if is_classify(r.body)]) == 1


async def test_by_default_no_classify_job_is_queued(bus_env, tmp_path, js_client) -> None:
    _, js = js_client
    async for stack in make_stack(bus_env, tmp_path):
        stack.model.respond = answering(json.dumps({"idea_type": "research", "issues": [], "clarity": 0.3}))
        asked = await stack.asked(PLANNING_IDEA)
        event = await proposed(js, asked["thread_id"])
        assert event.idea_type == "planning" and "classified" not in event.reason
        events = await stored_events(js, subjects.thread_events(asked["thread_id"]))
        assert [e.kind for e in events if isinstance(e, JobQueued)] == ["draft1"]
        assert not any(is_classify(r.body) for r in stack.model.chat_requests())


async def test_a_failed_or_late_classification_leaves_the_decision_to_the_rules(bus_env, tmp_path, js_client) -> None:
    """The classify call right after a draft is refused (400, not retryable), then, for another idea, answered
    only after the learner's 2 s timeout: both times the rules decide, once, and the thread goes on."""
    _, js = js_client
    reply = json.dumps({"idea_type": "research", "issues": [], "clarity": 0.3})
    async for stack in make_stack(
        bus_env, tmp_path, HERMES_CLASSIFICATION_ENABLE_LLM="true", HERMES_CLASSIFICATION_TIMEOUT_SECONDS="2"
    ):

        def then(fault: Fault, **how):
            def respond(body: dict) -> str:
                if is_classify(body):
                    return reply
                stack.model.set_fault(fault, times=1, **how)  # the next call is the classify one
                return DRAFT

            return respond

        stack.model.respond = then(Fault.BAD_REQUEST, message="unsupported")
        failed = await stack.asked(PLANNING_IDEA)
        assert failed["status"] == "awaiting_answers" and failed["idea_type"] == "planning"
        assert "classified by rules (llm job failed)" in (await proposed(js, failed["thread_id"])).reason
        assert {j["kind"]: j["status"] for j in failed["jobs"]}["classify"] == "failed"

        stack.model.respond = then(Fault.SLOW_FIRST_BYTE, delay_s=5)
        late = await stack.asked(OTHER_IDEA)
        assert late["idea_type"] == "planning"
        assert "classified by rules (llm timed out)" in (await proposed(js, late["thread_id"])).reason

        async def classify_done():
            view = await stack.thread(late["thread_id"])
            return view if {j["kind"]: j["status"] for j in view["jobs"]}.get("classify") == "completed" else None

        view = await wait_until(classify_done, timeout_s=15, interval_s=0.3)
        await asyncio.sleep(1)  # room for a (wrong) second decision on the late result
        assert view["status"] == "awaiting_answers" and view["idea_type"] == "planning"
        await proposed(js, late["thread_id"])  # still exactly one


async def test_the_model_reads_facts_the_rules_cannot_from_answers(llm_stack: Stack, js_client) -> None:
    """With LLM classification on, the user's answers also go to a model (a ``classify`` job of the thread): a fact it
    reads that the rules left out is learned (here a schedule said inside a longer answer), one the user never wrote
    is dropped, and what the rules read stays."""
    _, js = js_client
    facts = {
        "facts": [
            {"slot": "schedule", "value": "weekends only"},
            {"slot": "audience", "value": "my whole company"},  # never said: dropped
            {"slot": "Bad Slot!", "value": "weekends"},  # not a slot name: dropped
        ]
    }
    classification = json.dumps({"idea_type": "research", "issues": ["scope"], "clarity": 0.3})
    llm_stack.model.respond = lambda body: (
        classification if is_classify(body) else json.dumps(facts) if is_extract(body) else DRAFT
    )
    asked = await llm_stack.asked(PLANNING_IDEA)
    thread_id, first = asked["thread_id"], asked["questions"][0]
    llm_stack.model.set_fault(Fault.SLOW_FIRST_BYTE, times=1, delay_s=2)  # draft 2: the reading is queued before
    said = "I can work on it weekends only, with my neighbour"
    await llm_stack.call(
        "POST", f"/api/threads/{thread_id}/continue", 202, json={"answers": {first["question_id"]: said}}
    )
    await llm_stack.completed(thread_id)

    async def learned():
        return (await llm_stack.preferences()).get(("fact", "schedule"))

    schedule = await wait_until(learned, timeout_s=20, interval_s=0.3)
    assert (schedule["value"], schedule["evidence"], schedule["observations"]) == ("weekends only", "answer", 1)
    held = await llm_stack.preferences()
    assert ("fact", "audience") not in held and ("constraint", "audience") not in held
    assert (
        held[(category_of(first["slot"]), first["slot"])]["value"] == said
    )  # the rules' reading of the answer to its own slot
    readings = [r.body for r in llm_stack.model.chat_requests() if is_extract(r.body)]
    assert len(readings) == 1 and said in readings[0]["messages"][1]["content"] and readings[0]["temperature"] == 0
    assert f"(slot {first['slot']})" in readings[0]["messages"][1]["content"]
    events = await stored_events(js, subjects.thread_events(thread_id))
    assert [e.kind for e in events if isinstance(e, JobQueued)].count("classify") == 2

"""LLM classification of ideas, pure parts: the classify prompt, the parsing of a model's answer, and the
decision with a model's reading in place of the pattern rules (issue 5)."""

from __future__ import annotations

import json

import msgspec
import pytest

from hermes_proto.codec import decode_command, encode
from hermes_proto.commands import RequestClassification
from hermes_proto.events import QUESTION_CATEGORIES, ExecutionAbandoned, ExecutionCompleted, JobQueued
from hermes_proto.ids import utcnow

from hermes_learner import domain, ideas
from hermes_learner.classification import (
    DRAFT_CHARS,
    Classification,
    classification_messages,
    parse_classification,
)
from hermes_learner.classifier import DISABLED, LLM, OUTCOMES, classification_job_id, reason_suffix
from hermes_learner.templates import SEED_TEMPLATES
from hermes_orchestrator import domain as orch

IDEA = "help me plan a vegetable garden on my balcony"


def test_prompt_names_every_type_and_issue_and_carries_idea_and_draft() -> None:
    messages = classification_messages(IDEA, "Draft: pick pots. " + "x" * (2 * DRAFT_CHARS))
    system, user = messages[0].content, messages[1].content
    assert [m.role for m in messages] == ["system", "user"]
    for name in (*ideas.IDEA_TYPES, *QUESTION_CATEGORIES, "idea_type", "issues", "clarity", "JSON"):
        assert name in system
    assert IDEA in user and "Draft: pick pots." in user
    assert len(user) < DRAFT_CHARS + len(IDEA) + 100  # the draft is cut


GOOD = {"idea_type": "research", "issues": ["scope", "intent"], "clarity": 0.35}


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(GOOD),
        "```json\n" + json.dumps(GOOD) + "\n```",
        "Sure! Here is the classification:\n" + json.dumps(GOOD) + "\nHope this helps.",
        json.dumps({"idea_type": " Research ", "issues": ["SCOPE", "intent", "scope"], "clarity": 0.35}),
    ],
)
def test_parse_accepts_json_with_fences_prose_case_and_repeats(text: str) -> None:
    assert parse_classification(text) == Classification("research", ("intent", "scope"), 0.35)


def test_parse_keeps_an_empty_issue_list_and_integer_clarity() -> None:
    assert parse_classification('{"idea_type": "general", "issues": [], "clarity": 1}') == Classification(
        "general", (), 1.0
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        "I think it is a planning idea.",
        "[1, 2, 3]",
        "{not json}",
        json.dumps({**GOOD, "idea_type": "gardening"}),  # unknown type
        json.dumps({**GOOD, "issues": ["scope", "budget"]}),  # unknown issue
        json.dumps({**GOOD, "issues": "scope"}),  # not a list
        json.dumps({**GOOD, "clarity": 1.5}),
        json.dumps({**GOOD, "clarity": -0.1}),  # out of range
        json.dumps({**GOOD, "clarity": "high"}),
        json.dumps({**GOOD, "clarity": True}),
        '{"idea_type": "research", "issues": [], "clarity": NaN}',
        json.dumps({"issues": [], "clarity": 0.5}),  # no type
    ],
)
def test_parse_rejects_invalid_unknown_or_out_of_range(text: str) -> None:
    assert parse_classification(text) is None


def _choose(classification: Classification | None, cap: int = 5) -> domain.Decision:
    return domain.choose(IDEA, "", SEED_TEMPLATES, {}, cap, draft_event_id="draft-1", classification=classification)


def test_choose_uses_the_models_type_clarity_and_issues() -> None:
    rules = _choose(None)
    assert rules.idea_type == "planning" != "research"
    reading = Classification("research", ("scope",), 0.2)
    decision = _choose(reading)
    assert decision.idea_type == "research" and decision.clarity == 0.2
    assert "research idea with clarity 0.20; open issues: scope" in decision.reason
    assert decision.questions and decision.questions[0].category == "scope"  # the one open issue ranks first
    assert decision != rules


def test_choose_stops_when_the_model_finds_the_idea_clear() -> None:
    decision = _choose(Classification("planning", (), 0.95))
    assert decision.questions == [] and "clear enough" in decision.reason


def test_choose_without_classification_is_the_rules_path() -> None:
    expected = domain.choose(IDEA, "", SEED_TEMPLATES, {}, 5, draft_event_id="draft-1")
    assert _choose(None) == expected
    assert expected.idea_type == ideas.classify(IDEA) and expected.clarity == ideas.clarity(IDEA)


def test_reason_suffix_names_the_method_and_is_empty_when_disabled() -> None:
    assert reason_suffix(DISABLED) == ""
    assert reason_suffix(LLM) == "; classified by llm"
    assert reason_suffix("invalid_output") == "; classified by rules (llm output invalid)"
    assert all(reason_suffix(o).startswith("; classified by rules") for o in OUTCOMES if o not in (LLM, DISABLED))


def test_request_classification_round_trips_and_validates() -> None:
    cmd = RequestClassification(
        command_id="c1",
        issued_at=utcnow(),
        thread_id="t1",
        job_id=classification_job_id("draft-1"),
        messages=classification_messages(IDEA, "draft"),
    )
    back = decode_command(encode(cmd))
    assert back == cmd and back.max_tokens == 200 and back.temperature == 0.0
    assert classification_job_id("draft-1") == classification_job_id("draft-1") != classification_job_id("d2")
    bad = msgspec.json.decode(encode(cmd))
    bad["max_tokens"] = 0
    with pytest.raises(Exception):
        decode_command(msgspec.json.encode(bad))


# ---- the orchestrator's side: a classify job never moves its thread ---------------------------------------------


def _thread(status: str = orch.AWAITING_ANSWERS, **jobs: str) -> orch.ThreadState:
    return orch.ThreadState(
        thread_id="t1",
        idea=IDEA,
        status=status,
        correlation_id="c",
        max_questions=5,
        draft1="draft",
        jobs={j: orch.JobState(j, kind, "queued", closed_by="end") for j, kind in jobs.items()},
    )


def _request(job_id: str = "cls-1") -> RequestClassification:
    return RequestClassification(
        command_id="cmd-1",
        issued_at=utcnow(),
        thread_id="t1",
        job_id=job_id,
        messages=classification_messages(IDEA, "draft"),
    )


def test_orchestrator_queues_one_classify_job_on_an_open_thread_only() -> None:
    (queued,) = orch.decide_classification(_thread(), _request(), orch.Limits(), utcnow())
    assert isinstance(queued, JobQueued) and queued.kind == "classify" and queued.job_id == "cls-1"
    assert queued.job_type == "analysis" and queued.max_tokens == 200 and queued.temperature == 0.0
    assert orch.decide_classification(_thread(**{"cls-1": "classify"}), _request(), orch.Limits(), utcnow()) == []
    assert orch.decide_classification(_thread(orch.COMPLETED), _request(), orch.Limits(), utcnow()) == []
    assert orch.decide_classification(None, _request(), orch.Limits(), utcnow()) == []


def _ended(job_id: str, error_code: str = "bad_request") -> ExecutionAbandoned:
    return ExecutionAbandoned(
        event_id="end",
        aggregate_id="t1",
        occurred_at=utcnow(),
        correlation_id="c",
        job_id=job_id,
        error_code=error_code,
        message="no",
    )


def test_a_classify_result_or_failure_presents_nothing_and_ends_nothing() -> None:
    state = _thread(**{"cls-1": "classify"})
    done = ExecutionCompleted(
        event_id="end",
        aggregate_id="t1",
        occurred_at=utcnow(),
        correlation_id="c",
        job_id="cls-1",
        backend="talos",
        model="m",
        text="{}",
        prompt_tokens=5,
        completion_tokens=3,
        latency_ms=10.0,
    )
    assert orch.react_execution_completed(state, done, utcnow()) == []
    assert [e.type_name() for e in orch.react_execution_abandoned(state, _ended("cls-1"), utcnow())] == ["job_failed"]
    ended = orch.react_execution_abandoned(_thread(**{"d2": "draft2"}), _ended("d2"), utcnow())
    assert "thread_completed" in [e.type_name() for e in ended]  # the same failure of a draft 2 ends the thread

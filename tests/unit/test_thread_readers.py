"""The readers of a thread ask :mod:`hermes_proto.threads` (through the views' flags) instead of spelling a status:
the gateway's answer and rate checks, the notifier's cancel and answer window, the CLI's error hint. No bus."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hermes_proto import threads
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    DraftPresented,
    QuestionsProposed,
    ThreadCompleted,
    ThreadFailed,
)
from hermes_proto.queries import JobView, QuestionView, ThreadView

from hermes_cli.client import GatewayError
from hermes_cli.common import validation_hint
from hermes_gateway.domain import Rejected, check_answerable, check_ratable
from hermes_notifier import chat

NOW = datetime(2026, 12, 5, tzinfo=UTC)
ENV = dict(event_id="e", aggregate_id="t", occurred_at=NOW, correlation_id="c")


def view(status: str, jobs: list[JobView] | None = None) -> ThreadView:
    return ThreadView(
        thread_id="t",
        idea="i",
        channel="telegram",
        user_id="u",
        origin={},
        status=status,
        created_at=NOW,
        updated_at=NOW,
        jobs=jobs or [],
        questions=[QuestionView(question_id="q1", category="scope", text="How big?")],
    )


@pytest.mark.parametrize("status", threads.THREAD_STATUSES)
def test_the_gateway_takes_answers_and_ratings_exactly_when_the_rules_say(status: str) -> None:
    answers = [Answer(question_id="q1", text="a balcony")]
    if threads.answerable(status):
        check_answerable(view(status), answers)
    else:
        with pytest.raises(Rejected) as caught:
            check_answerable(view(status), answers)
        assert caught.value.code == "not_awaiting_answers" and caught.value.details["status"] == status
    if threads.ratable(status):
        check_ratable(view(status))
    else:
        with pytest.raises(Rejected, match="only a completed thread"):
            check_ratable(view(status))


def test_an_answer_to_an_unknown_question_is_still_refused_when_answerable() -> None:
    with pytest.raises(Rejected) as caught:
        check_answerable(view(threads.AWAITING_ANSWERS), [Answer(question_id="q9", text="x")])
    assert caught.value.code == "unknown_question"


def test_the_notifier_cancels_the_jobs_that_have_not_ended() -> None:
    jobs = [
        JobView(job_id=f"j-{status}", thread_id="t", kind="draft1", status=status)
        for status in (*threads.OPEN_JOB_STATUSES, *threads.CLOSED_JOB_STATUSES)
    ]
    assert chat.open_jobs(view(threads.DRAFTING, jobs)) == [f"j-{s}" for s in threads.OPEN_JOB_STATUSES]


def test_a_telegram_thread_takes_answers_until_answers_are_recorded_or_it_ends() -> None:
    recorded = AnswersRecorded(**ENV, answers=[])
    completed = ThreadCompleted(**ENV, final_draft_number=1, reason="answer_timeout")
    failed = ThreadFailed(**ENV, error_code="x", message="y")
    assert chat.answers_open([])
    for closing in ([recorded], [completed], [failed], [recorded, completed], [completed, failed]):
        assert not chat.answers_open(closing)
    # Events that do not close the window leave it open (the caller only looks up ANSWERS_CLOSED_BY).
    assert chat.answers_open(
        [
            DraftPresented(**ENV, job_id="j", draft_number=1, text="x", backend="b", model="m"),
            QuestionsProposed(**ENV, questions=[], idea_type="plan", clarity=0.4),
        ]
    )
    assert set(chat.ANSWERS_CLOSED_BY) == {AnswersRecorded, ThreadCompleted, ThreadFailed}


def test_the_cli_shows_what_a_validation_failure_names() -> None:
    details = [
        {"loc": ["query", "status"], "type": "literal_error", "message": "Input should be 'drafting' or 'active'"},
        {"loc": [], "type": "x", "message": "whole request"},
    ]
    assert validation_hint(GatewayError(422, "validation_failed", "m", details=details)) == (
        "status: Input should be 'drafting' or 'active'; whole request"
    )
    assert validation_hint(GatewayError(422, "validation_failed", "m", details={"field": "x"})) is None
    assert validation_hint(GatewayError(404, "thread_not_found", "m", details=details)) is None
    assert validation_hint(GatewayError(422, "validation_failed", "m", details=[])) is None

"""The thread's rules in ``hermes_proto.threads``: transitions and predicates, no bus, no database."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from hermes_proto import threads
from hermes_proto.events import (
    AnswersRecorded,
    BackendSelected,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    JobCancelled,
    JobFailed,
    JobSkipped,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
)
from hermes_proto.queries import JobView, ThreadView

NOW = datetime(2026, 12, 5, tzinfo=UTC)
ENV = dict(event_id="e", aggregate_id="t", occurred_at=NOW, correlation_id="c")


def draft(n: int) -> DraftPresented:
    return DraftPresented(**ENV, job_id="j", draft_number=n, text="x", backend="b", model="m")


def test_an_idea_thread_moves_through_its_statuses() -> None:
    status = threads.opened_status("idea")
    seen = [status]
    for event in (
        draft(1),
        AnswersRecorded(**ENV, answers=[]),
        draft(2),
        ThreadCompleted(**ENV, final_draft_number=2, reason="answered"),
        ThreadRated(**ENV, rating=5, draft_number=2),
    ):
        status = threads.thread_status_after(status, event)
        seen.append(status)
    assert seen == ["drafting", "awaiting_answers", "refining", "refining", "completed", "completed"]


def test_final_statuses_never_move() -> None:
    for final in threads.FINAL_STATUSES:
        for event in (
            draft(1),
            AnswersRecorded(**ENV, answers=[]),
            ThreadCompleted(**ENV, final_draft_number=1, reason="x"),
            ThreadFailed(**ENV, error_code="x", message="y"),
        ):
            assert threads.thread_status_after(final, event) == final


def test_a_chat_session_is_active_until_it_fails() -> None:
    status = threads.opened_status("chat")
    assert status == "active" and threads.is_open(status) and not threads.answerable(status)
    assert threads.thread_status_after(status, draft(1)) == "active"
    assert threads.thread_status_after(status, ThreadFailed(**ENV, error_code="x", message="y")) == "failed"


@pytest.mark.parametrize(
    ("status", "answerable", "ratable", "open_"),
    [
        ("drafting", False, False, True),
        ("awaiting_answers", True, False, True),
        ("refining", False, False, True),
        ("completed", False, True, False),
        ("failed", False, False, False),
        ("active", False, False, True),
    ],
)
def test_predicates(status: str, answerable: bool, ratable: bool, open_: bool) -> None:
    assert (threads.answerable(status), threads.ratable(status), threads.is_open(status)) == (
        answerable,
        ratable,
        open_,
    )
    assert threads.is_final(status) is not open_


def job_events() -> dict[str, object]:
    job = dict(ENV, job_id="j")
    return {
        "selected": BackendSelected(**job, backend="b", model="m", reason="r"),
        "started": ExecutionStarted(**job, backend="b", model="m"),
        "failed_attempt": ExecutionFailed(
            **job, backend="b", model="m", error_code="timeout", message="m", retryable=True
        ),
        "completed": ExecutionCompleted(
            **job, backend="b", model="m", text="t", prompt_tokens=1, completion_tokens=1, latency_ms=1.0
        ),
        "abandoned": ExecutionAbandoned(**job, error_code="no_backend", message="m"),
        "cancelled": JobCancelled(**job, reason="user"),
        "job_failed": JobFailed(**job, error_code="timeout", message="m"),
    }


def test_a_job_runs_fails_over_and_completes() -> None:
    e = job_events()
    status = "queued"
    seen = []
    for name in ("selected", "started", "failed_attempt", "selected", "started", "completed", "cancelled"):
        status = threads.job_status_after(status, e[name])
        seen.append(status)
    assert seen == ["dispatched", "running", "retrying", "dispatched", "running", "completed", "completed"]
    assert threads.job_closed(status) and not threads.cancellable(status)


def test_a_closed_job_ignores_late_outcomes_but_a_timeout_fails_a_cancelled_one() -> None:
    e = job_events()
    for closed in threads.CLOSED_JOB_STATUSES:
        for name in ("selected", "started", "failed_attempt", "completed", "abandoned", "cancelled"):
            assert threads.job_status_after(closed, e[name]) == closed
    assert threads.job_status_after("cancelled", e["job_failed"]) == "failed"


def test_step_follows_its_job_until_final() -> None:
    e = job_events()
    assert threads.step_status_after("waiting", e["selected"], "dispatched") == "dispatched"
    assert threads.step_status_after("running", JobSkipped(**ENV, job_id="j", step_id="s", reason="r")) == "skipped"
    assert threads.step_status_after("cancelled", e["completed"], "completed") == "cancelled"
    assert threads.step_status_after("cancelled", e["job_failed"], "failed") == "failed"


def test_views_carry_the_rules_whatever_was_sent() -> None:
    view = ThreadView(
        thread_id="t",
        idea="i",
        channel="web",
        user_id="u",
        origin={},
        status="awaiting_answers",
        created_at=NOW,
        updated_at=NOW,
        answerable=False,
        ratable=True,
    )
    assert (view.answerable, view.ratable, view.open) == (True, False, True)
    sent = msgspec.json.encode(
        ThreadView(
            thread_id="t",
            idea="i",
            channel="web",
            user_id="u",
            origin={},
            status="completed",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    forged = sent.replace(b'"ratable":true', b'"ratable":false')
    assert msgspec.json.decode(forged, type=ThreadView).ratable is True
    job = msgspec.json.decode(
        msgspec.json.encode(JobView(job_id="j", thread_id="t", kind="draft1", status="running")), type=JobView
    )
    assert job.cancellable and not JobView(job_id="j", thread_id="t", kind="draft1", status="failed").cancellable


def test_an_agent_turn_is_a_session_turn_of_the_one_job_kind():
    from hermes_proto import agents, threads

    assert threads.AGENT_TURN == agents.AGENT_TURN and threads.AGENT_TURN in threads.TURN_KINDS

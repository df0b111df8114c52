"""``hermes_gateway.accepted.AcceptedThreads``: what the gateway remembers of the submissions it accepted, how long
and how many; no bus (a clock the test moves)."""

from __future__ import annotations

from datetime import UTC, datetime

from fakes.clock import ManualClock

from hermes_proto import threads
from hermes_proto.commands import AnswerQuestions, SubmitIdea, SubmitWorkflow
from hermes_proto.events import WorkflowStep

from hermes_gateway.accepted import ACCEPTED, AcceptedThreads

NOW = datetime(2026, 12, 5, tzinfo=UTC)


def idea(thread_id: str, text: str = "plan a garden") -> SubmitIdea:
    return SubmitIdea(
        command_id=f"c-{thread_id}",
        issued_at=NOW,
        thread_id=thread_id,
        idea=text,
        channel="cli",
        user_id="alice",
        project="garden",
        private=True,
        priority=8,
    )


def test_an_accepted_view_says_what_was_submitted_and_allows_nothing_yet() -> None:
    accepted = AcceptedThreads(max_threads=10, ttl_s=60, timer=ManualClock())
    accepted.remember(idea("t1"))
    view = accepted.view("t1")
    assert view is not None and view.status == ACCEPTED and ACCEPTED not in threads.THREAD_STATUSES
    assert (view.idea, view.channel, view.user_id, view.project, view.private, view.priority, view.kind) == (
        "plan a garden",
        "cli",
        "alice",
        "garden",
        True,
        8,
        "idea",
    )
    assert view.created_at == view.updated_at == NOW and view.jobs == [] and view.questions == []
    assert (view.answerable, view.ratable, view.open) == (False, False, True)

    workflow = SubmitWorkflow(
        command_id="c-w",
        issued_at=NOW,
        thread_id="w1",
        title="",
        steps=[WorkflowStep(step_id="a", prompt="outline the talk")],
    )
    accepted.remember(workflow)
    assert (accepted.view("w1").kind, accepted.view("w1").idea) == ("workflow", "outline the talk")
    accepted.remember(AnswerQuestions(command_id="c-a", issued_at=NOW, thread_id="t9", answers=[]))
    assert accepted.view("t9") is None and len(accepted) == 2  # only submissions open threads


def test_bounded_in_time_and_in_number_and_forgotten_once_shown() -> None:
    clock = ManualClock()
    accepted = AcceptedThreads(max_threads=2, ttl_s=60, timer=clock)
    for thread_id in ("t1", "t2", "t3"):
        accepted.remember(idea(thread_id))
    assert accepted.view("t1") is None and len(accepted) == 2  # the oldest went first
    clock.now = 59.0
    assert accepted.view("t2") is not None
    accepted.forget("t2")  # the orchestrator shows it now
    assert accepted.view("t2") is None
    clock.now = 61.0
    assert accepted.view("t3") is None and len(accepted) == 0  # expired

    off = AcceptedThreads(max_threads=0)
    off.remember(idea("t1"))
    assert off.view("t1") is None and len(off) == 0

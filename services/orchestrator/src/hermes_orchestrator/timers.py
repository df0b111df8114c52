"""Deadlines the orchestrator keeps: answer windows, job timeouts and workflow timeouts. Each fires a command onto the
bus (``CloseAnswerWindow``, ``CancelJob(reason=timeout)``, ``ExpireWorkflow``), which the commands consumer decides on
like any other, so a timer is only a reminder: the decision checks the thread's state again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import structlog

from hermes_proto.agents import AgentRunStarted, ApprovalRequested, ExpireAgentRun, ExpireApproval
from hermes_proto.base import Command, Event
from hermes_proto.bus import EventStore
from hermes_proto.commands import CancelJob, CloseAnswerWindow, ExpireWorkflow
from hermes_proto.events import JobQueued, ThreadCompleted, ThreadFailed, WorkflowPlanned
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.threads import AWAITING_ANSWERS, WORKFLOW, is_open

from hermes_orchestrator.fold import ThreadFold

log = structlog.get_logger("hermes.orchestrator")


class Timers:
    """Armed timers by key (``answer:<thread>``, ``job:<job>``, ``workflow:<thread>``); a fired command that cannot
    be sent is retried a second later. ``fold`` tells whether a job is still open when its timeout fires."""

    def __init__(self, store: EventStore, fold: ThreadFold) -> None:
        self._store = store
        self._fold = fold
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def schedule(self, key: str, deadline: datetime, command: Callable[[], Command | None]) -> None:
        """At ``deadline`` (UTC) send the command ``command()`` builds (None: nothing to do). A key already armed is
        left as it is."""
        if key in self._timers:
            return
        delay = max(0.0, _epoch(deadline) - datetime.now(UTC).timestamp())
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, lambda: asyncio.ensure_future(self._fire(key, command)))

    async def _fire(self, key: str, command: Callable[[], Command | None]) -> None:
        self._timers.pop(key, None)
        try:
            cmd = command()
            if cmd is not None:
                await self._store.send(cmd)
        except Exception as exc:  # retried: the deadline stays armed until the command is accepted
            log.warning("timer_command_failed", key=key, error=repr(exc))
            self.schedule(key, datetime.fromtimestamp(datetime.now(UTC).timestamp() + 1.0, UTC), command)

    def disarm(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def cancel_all(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    # ---- the three deadlines -----------------------------------------------------------------------------------

    def answer_window(self, thread_id: str, deadline: datetime, correlation_id: str | None) -> None:
        """Send ``CloseAnswerWindow`` for ``thread_id`` at ``deadline``."""
        self.schedule(
            f"answer:{thread_id}",
            deadline,
            lambda: CloseAnswerWindow(
                command_id=derived_id(thread_id, "close_answer_window"),
                issued_at=utcnow(),
                thread_id=thread_id,
                correlation_id=correlation_id,
            ),
        )

    def job_timeout(self, thread_id: str, job_id: str, deadline: datetime) -> None:
        """Send ``CancelJob(reason="timeout")`` for ``job_id`` at its deadline, if it is still open then."""

        def command() -> Command | None:
            if not self._fold.job_open(thread_id, job_id):
                return None
            return CancelJob(
                command_id=derived_id(job_id, "timeout"),
                issued_at=utcnow(),
                thread_id=thread_id,
                job_id=job_id,
                reason="timeout",
            )

        self.schedule(f"job:{job_id}", deadline, command)

    def workflow_timeout(self, thread_id: str, deadline: datetime) -> None:
        self.schedule(
            f"workflow:{thread_id}",
            deadline,
            lambda: ExpireWorkflow(
                command_id=derived_id(thread_id, "expire_workflow"), issued_at=utcnow(), thread_id=thread_id
            ),
        )

    def approval(self, thread_id: str, approval_id: str, deadline: datetime) -> None:
        """Send ``ExpireApproval`` at the approval's ``expires_at`` (the decision ignores an answered one)."""
        self.schedule(
            f"approval:{approval_id}",
            deadline,
            lambda: ExpireApproval(
                command_id=derived_id(approval_id, "expire"),
                issued_at=utcnow(),
                thread_id=thread_id,
                approval_id=approval_id,
            ),
        )

    def run_deadline(self, thread_id: str, deadline: datetime) -> None:
        """Send ``ExpireAgentRun`` when the run's wall time is up."""
        self.schedule(
            f"run:{thread_id}",
            deadline,
            lambda: ExpireAgentRun(
                command_id=derived_id(thread_id, "expire_run"), issued_at=utcnow(), thread_id=thread_id
            ),
        )

    def follow(self, events: Iterable[Event]) -> None:
        """Arm the deadlines appended events carry; disarm the windows of a thread that ended."""
        for e in events:
            if isinstance(e, JobQueued) and e.timeout_s:
                self.job_timeout(
                    e.aggregate_id, e.job_id, datetime.fromtimestamp(e.occurred_at.timestamp() + e.timeout_s, UTC)
                )
            elif isinstance(e, WorkflowPlanned) and e.timeout_s:
                self.workflow_timeout(
                    e.aggregate_id, datetime.fromtimestamp(e.occurred_at.timestamp() + e.timeout_s, UTC)
                )
            elif isinstance(e, AgentRunStarted):
                self.run_deadline(e.aggregate_id, datetime.fromtimestamp(e.occurred_at.timestamp() + e.timeout_s, UTC))
            elif isinstance(e, ApprovalRequested):
                self.approval(e.aggregate_id, e.approval_id, e.expires_at)
            elif isinstance(e, ThreadCompleted | ThreadFailed):  # nothing left for its windows to close
                self.disarm(f"answer:{e.aggregate_id}")
                self.disarm(f"workflow:{e.aggregate_id}")
                self.disarm(f"run:{e.aggregate_id}")

    def arm_pending(self) -> None:
        """After start-up: the answer windows of threads awaiting answers, the timeouts of open jobs and those of
        unfinished workflows, from the fold."""
        answers = jobs = workflows = 0
        for state in list(self._fold.states.values()):
            if state.status == AWAITING_ANSWERS and state.answer_deadline is not None:
                self.answer_window(state.thread_id, state.answer_deadline, None)
                answers += 1
            if state.kind == WORKFLOW and is_open(state.status) and state.workflow_deadline is not None:
                self.workflow_timeout(state.thread_id, state.workflow_deadline)
                workflows += 1
            if state.run is not None and not state.run.ended:
                self.run_deadline(state.thread_id, state.run.deadline)
                for approval in state.run.approvals.values():
                    if approval.status == "pending":
                        self.approval(state.thread_id, approval.approval_id, approval.expires_at)
        for state, job_id, _, _ in list(self._fold.open_jobs()):
            deadline = state.jobs[job_id].deadline
            if deadline is not None:
                self.job_timeout(state.thread_id, job_id, deadline)
                jobs += 1
        log.info("timers_armed", answer_windows=answers, job_timeouts=jobs, workflows=workflows)


def _epoch(ts: datetime) -> float:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()

"""The thread's rules in one place: its statuses and kinds, its jobs' kinds and statuses, how each event moves
them, and what may be done to a thread or job in each status.

The orchestrator folds these transitions into its decision state and its read model; the gateway, the notifier,
the ``hermes`` model and the CLI (through the views' ``answerable`` / ``ratable`` / ``cancellable`` flags) ask the
predicates instead of spelling a status. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Final, Literal

from hermes_proto.base import Event
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
    JobQueued,
    JobSkipped,
    ThreadCompleted,
    ThreadFailed,
)

ThreadStatus = Literal["drafting", "awaiting_answers", "refining", "completed", "failed", "active"]
"""A thread moves drafting → awaiting_answers (draft 1 presented) → refining (answers recorded, or a draft 2 queued on
what Hermes learned without answers) → completed, or to failed from any open status; a chat session is ``active``
for ever."""
ThreadKind = Literal["idea", "chat", "workflow"]
JobKind = Literal["draft1", "draft2", "step", "chat", "classify", "agent_turn"]
JobStatus = Literal["queued", "dispatched", "running", "retrying", "completed", "failed", "cancelled"]
"""``retrying``: an attempt failed and the router may fail over; the last three are final."""
StepStatus = Literal[
    "waiting", "queued", "dispatched", "running", "retrying", "completed", "failed", "cancelled", "skipped"
]
"""A workflow step waits for its dependencies, then follows its job's status, or is skipped."""

DRAFTING: Final = "drafting"
AWAITING_ANSWERS: Final = "awaiting_answers"
REFINING: Final = "refining"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
ACTIVE: Final = "active"
THREAD_STATUSES: Final[tuple[ThreadStatus, ...]] = (DRAFTING, AWAITING_ANSWERS, REFINING, COMPLETED, FAILED, ACTIVE)
FINAL_STATUSES: Final[tuple[ThreadStatus, ...]] = (COMPLETED, FAILED)

IDEA: Final = "idea"
CHAT: Final = "chat"
"""The kind of a chat session's thread and of each of its turns' jobs: a turn presents no draft and never ends its
session."""
WORKFLOW: Final = "workflow"

DRAFT1: Final = "draft1"
DRAFT2: Final = "draft2"
STEP: Final = "step"
CLASSIFY: Final = "classify"
"""The job kind of an idea's classification: it presents no draft and never moves its thread."""
AGENT_TURN: Final = "agent_turn"
"""One model turn of an agent run (:data:`hermes_proto.agents.AGENT_TURN`, the same value: ``agents`` is imported by
``events``, so it cannot import this module)."""
TURN_KINDS: Final[tuple[JobKind, ...]] = (DRAFT1, DRAFT2, STEP, CHAT, AGENT_TURN)
"""The job kinds whose calls are turns of a session (a ``classify`` job is Hermes talking to itself)."""

OPEN_JOB_STATUSES: Final[tuple[JobStatus, ...]] = ("queued", "dispatched", "running", "retrying")
CLOSED_JOB_STATUSES: Final[tuple[JobStatus, ...]] = ("completed", "failed", "cancelled")
STEP_FINAL: Final[tuple[StepStatus, ...]] = ("completed", "failed", "cancelled", "skipped")


# ---- what may be done ---------------------------------------------------------------------------------------------


def is_final(status: str) -> bool:
    """The thread has ended (completed or failed): nothing moves it any more; it may only be rated."""
    return status in FINAL_STATUSES


def is_open(status: str) -> bool:
    """The thread has not ended (a chat session never does)."""
    return status not in FINAL_STATUSES


def answerable(status: str) -> bool:
    """Answers to its questions are taken now (draft 1 presented, answer window open)."""
    return status == AWAITING_ANSWERS


def ratable(status: str) -> bool:
    """A 1-5 rating of its final draft is taken now."""
    return status == COMPLETED


def cancellable(job_status: str) -> bool:
    """The job has not ended, so ``CancelJob`` still stops it."""
    return job_status in OPEN_JOB_STATUSES


def job_closed(job_status: str) -> bool:
    """The job has ended (completed, failed or cancelled)."""
    return job_status in CLOSED_JOB_STATUSES


# ---- how events move them -----------------------------------------------------------------------------------------


def opened_status(kind: str) -> ThreadStatus:
    """The status of a thread of ``kind`` when opened: a chat session is ``active``, anything else ``drafting``."""
    return ACTIVE if kind == CHAT else DRAFTING


def thread_status_after(status: str, event: Event) -> str:
    """The thread's status once ``event`` (one of its own) is applied; events that do not move it leave it."""
    match event:
        case DraftPresented(draft_number=1) if status == DRAFTING:
            return AWAITING_ANSWERS
        case AnswersRecorded() if status == AWAITING_ANSWERS:
            return REFINING
        case JobQueued(kind="draft2") if status == AWAITING_ANSWERS:  # a draft 2 on learned facts, no answers
            return REFINING
        case ThreadCompleted() if status not in FINAL_STATUSES:
            return COMPLETED
        case ThreadFailed() if status not in FINAL_STATUSES:
            return FAILED
    return status


def job_status_after(status: str, event: Event) -> str:
    """A job's status once ``event`` about it is applied (the job was ``queued`` by its ``JobQueued``).

    A selection dispatches a queued or retrying job; a started call runs a queued or dispatched one; an outcome
    (completed, failed attempt → retrying, abandoned → failed, cancelled) applies only while the job is open;
    ``JobFailed`` always fails it (a timed-out job is cancelled, then failed)."""
    match event:
        case JobFailed():
            return "failed"
        case BackendSelected() if status in ("queued", "retrying"):
            return "dispatched"
        case ExecutionStarted() if status in ("queued", "dispatched"):
            return "running"
        case _ if status in CLOSED_JOB_STATUSES:
            return status
        case ExecutionCompleted():
            return "completed"
        case ExecutionFailed():
            return "retrying"
        case ExecutionAbandoned():
            return "failed"
        case JobCancelled():
            return "cancelled"
    return status


def step_status_after(status: str, event: Event, job_status: str | None = None) -> str:
    """A workflow step's status once ``event`` about its job is applied: it follows its job (``job_status``, the
    job's status after the event) until it is final; ``JobSkipped`` skips a step that has not ended, and
    ``JobFailed`` fails even a cancelled one (a step that timed out)."""
    if isinstance(event, JobFailed):
        return "failed"
    if status in STEP_FINAL:
        return status
    if isinstance(event, JobSkipped):
        return "skipped"
    return job_status if job_status is not None else status

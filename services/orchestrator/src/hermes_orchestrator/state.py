"""The thread aggregate's state and its fold: ``evolve(state, event) -> state``.

A thread's decision state is ``reduce(evolve, its events, None)``: the orchestrator keeps it in memory for every open
thread (:mod:`hermes_orchestrator.fold`), and :mod:`hermes_orchestrator.domain` decides on it. Status transitions come
from :mod:`hermes_proto.threads`, the one home of the thread's rules. ``evolve`` updates ``state`` in place and
returns it (a fold owns its states); nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from hermes_proto import agents as ag
from hermes_proto import events as ev
from hermes_proto import threads
from hermes_proto.base import Event
from hermes_proto.ids import derived_id

from hermes_orchestrator.run_state import RunState, evolve_run, run_started

AGENT_FOLDED = (*ag.AGENT_EVENTS, ev.JobQueued, ev.ExecutionCompleted, ev.CostRecorded)
"""The events an agent run's own state folds (besides the thread's)."""


@dataclass
class JobState:
    """One job of a thread. ``closed_by``: the id of the event that ended it (completed, abandoned, cancelled): a
    reaction to a later, stale outcome of the same job sees another id and does nothing. ``text``: the result, kept
    for workflow steps only (a later step's prompt holds it). ``deadline``: when its timeout cancels it."""

    job_id: str
    kind: str
    status: str
    step_id: str | None = None
    text: str | None = None
    closed_by: str | None = None
    priority: int = 5
    queued_at: datetime | None = None
    deadline: datetime | None = None


@dataclass
class StepState:
    """One workflow step: its definition (defaults resolved when planned) and its status."""

    step: ev.WorkflowStep
    job_id: str
    status: str = "waiting"


@dataclass
class QuestionState:
    question_id: str
    text: str
    answer: str | None = None


@dataclass
class ThreadState:
    """What a decision needs to know about one thread. ``answer_deadline``: when its answer window closes (UTC,
    while awaiting answers); ``workflow_deadline``: when its workflow times out; ``idea_type``: set by the first
    ``QuestionsProposed`` (a later proposal changes nothing)."""

    thread_id: str
    idea: str
    status: str
    correlation_id: str
    max_questions: int
    draft1: str | None = None
    draft2: str | None = None
    final_draft_number: int | None = None
    project: str = "default"
    private: bool = False
    priority: int = 5
    jobs: dict[str, JobState] = field(default_factory=dict)
    questions: list[QuestionState] = field(default_factory=list)
    kind: str = threads.IDEA
    steps: dict[str, StepState] = field(default_factory=dict)
    assumptions: list[ev.Assumption] = field(default_factory=list)
    """The learned facts its draft 1 applied (``ThreadOpened.assumptions``): draft 2 keeps them."""
    assumed: list[ev.Assumption] = field(default_factory=list)
    """The learned facts the learner's first proposal applies (``QuestionsProposed.assumptions``): those draft 1
    lacked make a draft 2 (:func:`hermes_orchestrator.domain.unapplied`)."""
    answer_timeout_s: float = 600.0
    answer_deadline: datetime | None = None
    workflow_deadline: datetime | None = None
    idea_type: str | None = None
    run: RunState | None = None
    """An agent run's own state (kind ``agent``, from its ``AgentRunStarted``)."""
    user_id: str = field(default="", compare=False)
    """Whose thread it is (``ThreadOpened.user_id``): what forgetting a user finds in memory. No decision reads it,
    so it is left out of comparisons (a state read back by :func:`hermes_orchestrator.snapshot.load_state` has "")."""


@dataclass
class KnownPreference:
    """A learned preference as its last ``PreferenceLearned`` left it (gone after ``PreferenceForgotten``): what a
    draft-1 prompt may apply once ``confidence`` reaches the threshold, until ``expires_at`` (UTC)."""

    preference_id: str
    user_id: str
    category: str
    key: str
    value: str
    confidence: float
    expires_at: datetime | None = None
    scope: str = ""
    wording: str = ""
    """The user's words for ``value`` (empty: ``value``): what a prompt shows."""

    def assumption(self) -> ev.Assumption:
        return ev.Assumption(
            preference_id=self.preference_id,
            category=self.category,
            key=self.key,
            value=self.wording or self.value,
            confidence=self.confidence,
            scope=self.scope,
        )


def step_job_id(thread_id: str, step_id: str) -> str:
    """The job id of a workflow step: derived from the thread and step, so it is known before it is queued."""
    return derived_id(thread_id, "step", step_id)


def evolve(state: ThreadState | None, event: Event) -> ThreadState | None:
    """``state`` with ``event`` (one of the thread's own) applied; None until the thread is opened. Events that do
    not concern a decision (costs, deferrals, ratings, the learner's and notifier's own) leave it as it is."""
    if state is None:
        return _opened(event) if isinstance(event, ev.ThreadOpened) else None
    if isinstance(event, ag.AgentRunStarted):
        state.run = state.run or run_started(event)
    elif state.run is not None and isinstance(event, AGENT_FOLDED):
        evolve_run(state.run, event)
    match event:
        case ev.WorkflowPlanned():
            if event.timeout_s:
                state.workflow_deadline = event.occurred_at + timedelta(seconds=event.timeout_s)
            for step in event.steps:
                if step.step_id not in state.steps:
                    state.steps[step.step_id] = StepState(step, step_job_id(state.thread_id, step.step_id))
        case ev.JobQueued():
            if event.job_id not in state.jobs:
                state.jobs[event.job_id] = JobState(
                    event.job_id,
                    event.kind,
                    "queued",
                    event.step_id,
                    priority=event.priority,
                    queued_at=event.occurred_at,
                    deadline=event.occurred_at + timedelta(seconds=event.timeout_s) if event.timeout_s else None,
                )
                _step_follows(state, event.step_id, "queued")
                if event.kind == threads.DRAFT2 and state.status == threads.AWAITING_ANSWERS:
                    state.answer_deadline = None
                    state.status = threads.thread_status_after(state.status, event)
        case (
            ev.BackendSelected()
            | ev.ExecutionStarted()
            | ev.ExecutionCompleted()
            | ev.ExecutionFailed()
            | ev.ExecutionAbandoned()
            | ev.JobCancelled()
            | ev.JobFailed()
        ):
            _job_event(state, event)
        case ev.JobSkipped():
            step = state.steps.get(event.step_id)
            if step is not None:
                step.status = threads.step_status_after(step.status, event)
        case ev.DraftPresented():
            if event.draft_number == 1:
                state.draft1 = event.text
                if state.status == threads.DRAFTING:
                    state.answer_deadline = event.occurred_at + timedelta(seconds=state.answer_timeout_s)
            else:
                state.draft2 = event.text
            state.status = threads.thread_status_after(state.status, event)
        case ev.QuestionsProposed():
            if state.idea_type is None:  # the first proposal of a thread wins, capped at its max_questions
                state.idea_type = event.idea_type
                state.assumed = list(event.assumptions)
                state.questions = [QuestionState(q.question_id, q.text) for q in event.questions[: state.max_questions]]
        case ev.AnswersRecorded():
            if state.status == threads.AWAITING_ANSWERS:
                state.answer_deadline = None
            state.status = threads.thread_status_after(state.status, event)
            answers = {a.question_id: a.text for a in event.answers}
            for q in state.questions:
                if q.question_id in answers:
                    q.answer = answers[q.question_id]
        case ev.ThreadCompleted() | ev.ThreadFailed():
            if threads.is_open(state.status):
                if isinstance(event, ev.ThreadCompleted):
                    state.final_draft_number = event.final_draft_number
                state.answer_deadline = None
            state.status = threads.thread_status_after(state.status, event)
    return state


def _opened(e: ev.ThreadOpened) -> ThreadState:
    return ThreadState(
        thread_id=e.aggregate_id,
        idea=e.idea,
        status=threads.opened_status(e.kind),
        correlation_id=e.correlation_id,
        max_questions=e.max_questions,
        project=e.project,
        private=e.private,
        priority=e.priority,
        kind=e.kind,
        assumptions=list(e.assumptions),
        answer_timeout_s=e.answer_timeout_s,
        user_id=e.user_id,
    )


def _job_event(
    state: ThreadState,
    e: ev.BackendSelected
    | ev.ExecutionStarted
    | ev.ExecutionCompleted
    | ev.ExecutionFailed
    | ev.ExecutionAbandoned
    | ev.JobCancelled
    | ev.JobFailed,
) -> None:
    job = state.jobs.get(e.job_id)
    if job is None:
        return
    before = job.status
    job.status = threads.job_status_after(before, e)
    if job.status == before and not isinstance(e, ev.JobFailed):
        return
    if isinstance(e, ev.JobFailed):
        job.closed_by = job.closed_by or e.event_id
        if job.step_id in state.steps:  # a timed-out step was cancelled first: it ends as failed
            state.steps[job.step_id].status = "failed"
        return
    if isinstance(e, ev.ExecutionCompleted | ev.ExecutionAbandoned | ev.JobCancelled):
        job.closed_by = e.event_id
        if isinstance(e, ev.ExecutionCompleted) and job.kind == threads.STEP:
            job.text = e.text
    if not isinstance(e, ev.ExecutionFailed):  # a failed attempt leaves the step as it was
        _step_follows(state, job.step_id, job.status)


def _step_follows(state: ThreadState, step_id: str | None, status: str) -> None:
    step = state.steps.get(step_id) if step_id else None
    if step is not None and step.status not in threads.STEP_FINAL:
        step.status = status

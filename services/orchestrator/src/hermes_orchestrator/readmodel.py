"""The orchestrator's read-model projection: each event of the log applied to the rows of
:mod:`hermes_orchestrator.tables`, held by a :class:`hermes_proto.rowstore.RowStore` and written once per batch with
the batch's last stream sequence (one transaction). Thread, job and step statuses move by the rules of
:mod:`hermes_proto.threads`, as the decision state's fold does (:mod:`hermes_orchestrator.state`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import singledispatch

import msgspec
from sqlalchemy.engine import Engine

from hermes_proto import events as ev
from hermes_proto import rowstore, sqlstore, threads
from hermes_proto.agents import AGENT_KIND
from hermes_proto.base import Event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.rowstore import RowStore, rows
from hermes_proto.sessions import TURN_KINDS

from hermes_orchestrator import (
    agent_readmodel,
    memory_readmodel,
    proposal_readmodel,
    readmodel_forget,
    schedule_readmodel,
)
from hermes_orchestrator.state import step_job_id
from hermes_orchestrator.tables import (  # noqa: F401 (the read model's tables, re-exported)
    MEMORY_FTS_DDL,
    READ_MODEL_TABLES,
    BackendSelectionRow,
    JobRow,
    MemoryRow,
    PreferenceRow,
    ProjectionPosition,
    QuestionRow,
    SettingRow,
    StepRow,
    ThreadRow,
    make_engine,
)

PROJECTION = "orchestrator"

Thread = rows(ThreadRow)
Job = rows(JobRow)
Step = rows(StepRow)
Question = rows(QuestionRow)
Selection = rows(BackendSelectionRow)
Preference = rows(PreferenceRow)
Memory = rows(MemoryRow)
Setting = rows(SettingRow)
Position = rows(ProjectionPosition)
ROWS = (
    Thread,
    Job,
    Step,
    Question,
    Selection,
    Preference,
    Memory,
    Setting,
    Position,
    *agent_readmodel.AGENT_ROWS,
    *schedule_readmodel.SCHEDULE_ROWS,
    *memory_readmodel.MEMORY_ROWS,
    *proposal_readmodel.PROPOSAL_ROWS,
)

FORGET_TABLES: readmodel_forget.Tables = {
    "thread": (
        (Thread, "thread_id"),
        (Job, "thread_id"),
        (Step, "thread_id"),
        (Question, "thread_id"),
        (Selection, "thread_id"),
        (Memory, "thread_id"),
        (agent_readmodel.Run, "run_id"),
        (agent_readmodel.Step, "run_id"),
        (agent_readmodel.Approval, "run_id"),
        (schedule_readmodel.Run, "run_id"),
    ),
    "schedule": ((schedule_readmodel.Schedule, "schedule_id"), (schedule_readmodel.Run, "schedule_id")),
    "preference": ((Preference, "preference_id"),),
    "memory_entry": ((memory_readmodel.Entry, "entry_id"),),
    "skill_proposal": ((proposal_readmodel.Proposal, "proposal_id"),),
}
"""Aggregate type → the rows deleted when it is forgotten: (row class, column holding its id). An agent run's id and
a scheduled run's are their thread's. Every table with a ``user_id`` column is here (a user's forget finds them)."""
FORGET_LINKS: readmodel_forget.Links = (("schedule", schedule_readmodel.Run, "schedule_id", "thread", "run_id"),)
"""A forgotten schedule's runs are threads: they go with it."""


def row_store(engine: Engine) -> RowStore:
    """The store the projection writes through (every table of this read model)."""
    return RowStore(engine, ROWS)


def load_position(store: RowStore) -> int:
    """The last stream sequence applied (0: nothing yet); call inside a batch."""
    return rowstore.load_position(store, Position, PROJECTION)


def save_position(store: RowStore, sequence: int) -> None:
    rowstore.save_position(store, Position, PROJECTION, sequence)


def apply_events(store: RowStore, events: Iterable[Event], sequence: int | None = None) -> None:
    """Apply ``events`` in order and, when ``sequence`` is given, save it as the position: one batch, one
    transaction. Raises what the database raises (nothing of the batch is written then). A batch that forgot
    something checkpoints SQLite's write-ahead log after its commit (:func:`hermes_proto.sqlstore.checkpoint`)."""
    forgot = False
    with store:
        for event in events:
            apply(event, store)
            forgot = forgot or isinstance(event, PersonalDataForgotten)
            if isinstance(event, agent_readmodel.RUN_EVENTS) and _is_agent_run(store, event):
                agent_readmodel.apply_agent(event, store)
            elif event.aggregate_type == "schedule":
                schedule_readmodel.apply_schedule(event, store)
            elif event.aggregate_type == "memory_entry":
                memory_readmodel.apply_memory(event, store)
            elif event.aggregate_type == "skill_proposal":
                proposal_readmodel.apply_proposal(event, store)
        if sequence is not None:
            save_position(store, sequence)
    if forgot:
        sqlstore.checkpoint(store.engine)


def _is_agent_run(store: RowStore, event: Event) -> bool:
    thread = store.get(Thread, event.aggregate_id)
    return thread is not None and thread.kind == AGENT_KIND


def _utc(ts: datetime) -> datetime:
    """Every stored time is UTC, timezone-aware."""
    return ts.astimezone(UTC)


def _touch(store: RowStore, event: Event):  # noqa: ANN202
    thread = store.get(Thread, event.aggregate_id)
    if thread is not None:
        thread.updated_at = _utc(event.occurred_at)
    return thread


@singledispatch
def apply(event: Event, store: RowStore) -> None:
    """Apply one event to the rows (events this projection does not use are ignored)."""


@apply.register
def _(e: ev.ThreadOpened, store: RowStore) -> None:
    store.insert_absent(
        Thread(
            thread_id=e.aggregate_id,
            idea=e.idea,
            channel=e.channel,
            user_id=e.user_id,
            origin_json=json.dumps(e.origin, sort_keys=True),
            status=threads.opened_status(e.kind),
            correlation_id=e.correlation_id,
            max_questions=e.max_questions,
            answer_timeout_s=e.answer_timeout_s,
            project=e.project,
            private=e.private,
            priority=e.priority,
            kind=e.kind,
            created_at=_utc(e.occurred_at),
            updated_at=_utc(e.occurred_at),
            assumptions_json=msgspec.json.encode(e.assumptions).decode(),
        )
    )


@apply.register
def _(e: PersonalDataForgotten, store: RowStore) -> None:
    deleted = readmodel_forget.forget_rows(store, e, FORGET_TABLES, FORGET_LINKS)
    if deleted.get(Memory):
        store.flush()  # the delete trigger marks the index entries; the merge drops them
        readmodel_forget.purge_fts(store.connection)


@apply.register
def _(e: ev.SettingChanged, store: RowStore) -> None:
    row = store.get(Setting, e.key)
    if e.value is None:
        if row is not None:
            store.delete(row)
        return
    if row is None:
        store.add(Setting(key=e.key, value=e.value, changed_by=e.by, changed_at=_utc(e.occurred_at)))
    else:
        row.value, row.changed_by, row.changed_at = e.value, e.by, _utc(e.occurred_at)


@apply.register
def _(e: ev.PreferenceLearned, store: RowStore) -> None:
    row = store.get(Preference, e.aggregate_id)
    if row is None:
        row = Preference(
            preference_id=e.aggregate_id,
            user_id=e.user_id,
            category=e.category,
            key=e.key,
            value=e.value,
            confidence=e.confidence,
        )
        store.add(row)
    row.value, row.confidence, row.scope, row.wording = e.value, e.confidence, e.scope, e.wording()
    row.expires_at = _utc(e.expires_at) if e.expires_at is not None else None


@apply.register
def _(e: ev.PreferenceForgotten, store: RowStore) -> None:
    row = store.get(Preference, e.aggregate_id)
    if row is not None:
        store.delete(row)


@apply.register
def _(e: ev.WorkflowPlanned, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is None:
        return
    if e.timeout_s:
        thread.workflow_deadline = _utc(e.occurred_at) + timedelta(seconds=e.timeout_s)
    for position, step in enumerate(e.steps):
        store.insert_absent(
            Step(
                job_id=step_job_id(e.aggregate_id, step.step_id),
                thread_id=e.aggregate_id,
                step_id=step.step_id,
                position=position,
                step_json=msgspec.json.encode(step).decode(),
            )
        )


def _step_follows(store: RowStore, job_id: str, status: str, reason: str | None = None) -> None:
    step = store.get(Step, job_id)
    if step is not None and step.status not in threads.STEP_FINAL:
        step.status, step.reason = status, reason


def _job_moved(store: RowStore, e: Event):  # noqa: ANN202
    """The job of ``e`` with its status moved by ``e`` (:func:`hermes_proto.threads.job_status_after`), or None
    when the job is unknown or ``e`` did not move it."""
    job = store.get(Job, e.job_id)  # type: ignore[attr-defined]
    if job is None:
        return None
    status = threads.job_status_after(job.status, e)
    if status == job.status:
        return None
    job.status = status
    return job


@apply.register
def _(e: ev.JobQueued, store: RowStore) -> None:
    queued_at = _utc(e.occurred_at)
    if not store.insert_absent(
        Job(
            job_id=e.job_id,
            thread_id=e.aggregate_id,
            kind=e.kind,
            status="queued",
            priority=e.priority,
            max_tokens=e.max_tokens,
            queued_at=queued_at,
            messages_json=json.dumps([{"role": m.role, "content": m.content} for m in e.messages]),
            step_id=e.step_id,
            max_retries=e.max_retries,
            timeout_s=e.timeout_s,
            memories_json=json.dumps(e.memories),
            deadline=queued_at + timedelta(seconds=e.timeout_s) if e.timeout_s else None,
        )
    ):
        return
    thread = _touch(store, e)
    if thread is not None and e.kind == threads.DRAFT2 and thread.status == threads.AWAITING_ANSWERS:
        thread.answer_deadline = None
        thread.status = threads.thread_status_after(thread.status, e)
    if e.step_id:
        _step_follows(store, e.job_id, "queued")


@apply.register
def _(e: ev.BackendSelected, store: RowStore) -> None:
    job = store.get(Job, e.job_id)
    if job is not None:
        job.backend, job.model, job.selection_reason = e.backend, e.model, e.reason
        job.attempts = max(job.attempts, e.attempt)
        if _job_moved(store, e) is not None:
            job.waiting_reason = None
            if job.step_id:
                _step_follows(store, job.job_id, job.status)
    store.insert_absent(
        Selection(
            event_id=e.event_id,
            job_id=e.job_id,
            thread_id=e.aggregate_id,
            backend=e.backend,
            model=e.model,
            criteria=e.criteria,
            reason=e.reason,
            selected_at=_utc(e.occurred_at),
            candidates_json=json.dumps(
                [
                    {"backend": c.backend, "model": c.model, "score": c.score, "rejected": c.rejected}
                    for c in e.candidates
                ]
            ),
        )
    )


@apply.register
def _(e: ev.ExecutionStarted, store: RowStore) -> None:
    job = _job_moved(store, e)
    if job is not None:
        job.started_at, job.backend, job.model = _utc(e.occurred_at), e.backend, e.model
        if job.step_id:
            _step_follows(store, job.job_id, job.status)


@apply.register
def _(e: ev.ExecutionCompleted, store: RowStore) -> None:
    job = _job_moved(store, e)
    if job is None:
        return
    job.text, job.finished_at, job.closed_by = e.text, _utc(e.occurred_at), e.event_id
    job.backend, job.model = e.backend, e.model
    job.prompt_tokens, job.completion_tokens = e.prompt_tokens, e.completion_tokens
    job.latency_ms, job.first_token_ms = e.latency_ms, e.first_token_ms
    if job.step_id:
        _step_follows(store, job.job_id, job.status)
    _remember(store, job, e)


def _remember(store: RowStore, job, e: ev.ExecutionCompleted) -> None:  # noqa: ANN001
    """A completed turn becomes a memory: its last user message and the reply, under its thread's user. A private
    thread's turns do not: a memory may be given to a later prompt that goes to a remote backend."""
    thread = store.get(Thread, job.thread_id)
    if job.kind not in TURN_KINDS or thread is None or thread.private or e.tool_calls or not e.text.strip():
        return  # an agent's turn that only called tools is no memory: its answer is
    users = [m["content"] for m in json.loads(job.messages_json) if m["role"] == "user"]
    store.insert_absent(
        Memory(
            job_id=job.job_id,
            thread_id=job.thread_id,
            user_id=thread.user_id,
            channel=thread.channel,
            prompt=users[-1] if users else "",
            reply=e.text,
            created_at=_utc(e.occurred_at),
        )
    )


@apply.register
def _(e: ev.ExecutionFailed, store: RowStore) -> None:
    """One attempt failed; the router decides whether another follows (ExecutionAbandoned ends the job)."""
    job = store.get(Job, e.job_id)
    if job is not None and not threads.job_closed(job.status):  # every failed attempt: the last error shows
        job.status = threads.job_status_after(job.status, e)
        job.error_code, job.error_message = e.error_code, e.message


@apply.register
def _(e: ev.ExecutionAbandoned, store: RowStore) -> None:
    job = _job_moved(store, e)
    if job is not None:
        job.finished_at, job.closed_by = _utc(e.occurred_at), e.event_id
        job.error_code, job.error_message = e.error_code, e.message
        if job.step_id:
            _step_follows(store, job.job_id, job.status)


@apply.register
def _(e: ev.JobDeferred, store: RowStore) -> None:
    job = store.get(Job, e.job_id)
    if job is not None and job.status in ("queued", "retrying"):
        job.waiting_reason = e.reason


@apply.register
def _(e: ev.CostRecorded, store: RowStore) -> None:
    job = store.get(Job, e.job_id)
    if job is not None:
        job.cost_cents = e.cost_cents


@apply.register
def _(e: ev.JobFailed, store: RowStore) -> None:
    job = store.get(Job, e.job_id)
    if job is None:
        return
    job.status = threads.job_status_after(job.status, e)
    job.error_code, job.error_message = e.error_code, e.message
    job.finished_at = job.finished_at or _utc(e.occurred_at)
    job.closed_by = job.closed_by or e.event_id
    step = store.get(Step, e.job_id) if job.step_id else None
    if step is not None:  # a timed-out step was cancelled first: it ends as failed
        step.status = threads.step_status_after(step.status, e)


@apply.register
def _(e: ev.JobCancelled, store: RowStore) -> None:
    job = _job_moved(store, e)
    if job is not None:
        job.finished_at, job.closed_by = _utc(e.occurred_at), e.event_id
        job.error_code, job.error_message, job.waiting_reason = e.reason, e.message, None
        if job.step_id:
            _step_follows(store, e.job_id, job.status, e.reason)


@apply.register
def _(e: ev.JobSkipped, store: RowStore) -> None:
    step = store.get(Step, e.job_id)
    if step is not None and step.status not in threads.STEP_FINAL:
        step.status, step.reason = threads.step_status_after(step.status, e), e.reason


@apply.register
def _(e: ev.DraftPresented, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is None:
        return
    if e.draft_number == 1:
        thread.draft1 = e.text
        if thread.status == threads.DRAFTING:
            thread.answer_deadline = _utc(e.occurred_at) + timedelta(seconds=thread.answer_timeout_s)
    else:
        thread.draft2 = e.text
    thread.status = threads.thread_status_after(thread.status, e)


@apply.register
def _(e: ev.QuestionsProposed, store: RowStore) -> None:
    thread = _touch(store, e)
    # The first proposal of a thread wins and is capped at its max_questions: a second producer (or a
    # replayed learner) can neither add questions nor exceed the thread's limit.
    if thread is None or thread.idea_type is not None:
        return
    thread.idea_type, thread.clarity = e.idea_type, e.clarity
    thread.assumed_json = msgspec.json.encode(e.assumptions).decode()
    for position, q in enumerate(e.questions[: thread.max_questions]):
        store.insert_absent(
            Question(
                question_id=q.question_id,
                thread_id=e.aggregate_id,
                position=position,
                template_id=q.template_id,
                category=q.category,
                text=q.text,
                suggestions_json=json.dumps(q.suggestions),
                expected_value=q.expected_value,
                slot=q.slot,
            )
        )


@apply.register
def _(e: ev.ThreadRated, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is not None:
        thread.rating, thread.rating_comment = e.rating, e.comment or None


@apply.register
def _(e: ev.AnswersRecorded, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is None:
        return
    if thread.status == threads.AWAITING_ANSWERS:
        thread.answer_deadline = None
    thread.status = threads.thread_status_after(thread.status, e)
    for a in e.answers:
        question = store.get(Question, a.question_id)
        if question is not None:
            question.answer, question.answered_at = a.text, _utc(e.occurred_at)


@apply.register
def _(e: ev.ThreadCompleted, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is not None and threads.is_open(thread.status):
        thread.status = threads.thread_status_after(thread.status, e)
        thread.final_draft_number, thread.completion_reason = e.final_draft_number, e.reason
        thread.answer_deadline = None


@apply.register
def _(e: ev.ThreadFailed, store: RowStore) -> None:
    thread = _touch(store, e)
    if thread is not None and threads.is_open(thread.status):
        thread.status = threads.thread_status_after(thread.status, e)
        thread.completion_reason = f"{e.error_code}: {e.message}"
        thread.answer_deadline = None

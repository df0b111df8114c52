"""Reads of the orchestrator's read model for queries (every function takes an open ``sqlmodel.Session`` or Core
``Connection``; nothing here writes): a thread with its jobs, questions and steps, one job, the recent threads. Rows are read with
SQLAlchemy Core on the session's connection (no ORM objects: a view is built straight from the records)."""

from __future__ import annotations

import json
from collections import Counter

import msgspec
from sqlalchemy import bindparam
from sqlalchemy.engine import Connection
from sqlmodel import Session, func, select

from hermes_proto import events as ev
from hermes_proto.queries import JobView, QuestionView, QueueReply, StepView, ThreadView
from hermes_proto.threads import OPEN_JOB_STATUSES, WORKFLOW

from hermes_orchestrator.domain import applied
from hermes_orchestrator.tables import JobRow, QuestionRow, StepRow, ThreadRow

_THREADS, _JOBS, _QUESTIONS, _STEPS = (
    model.__table__
    for model in (ThreadRow, JobRow, QuestionRow, StepRow)  # type: ignore[attr-defined]
)


# Built once (a view runs these for every query): parameters bound at execution.
_THREAD = select(_THREADS).where(_THREADS.c.thread_id == bindparam("thread_id"))
_THREAD_JOBS = select(_JOBS).where(_JOBS.c.thread_id == bindparam("thread_id")).order_by(_JOBS.c.queued_at)
_THREAD_QUESTIONS = (
    select(_QUESTIONS).where(_QUESTIONS.c.thread_id == bindparam("thread_id")).order_by(_QUESTIONS.c.position)
)
_THREAD_STEPS = select(_STEPS).where(_STEPS.c.thread_id == bindparam("thread_id")).order_by(_STEPS.c.position)
_JOB = select(_JOBS).where(_JOBS.c.job_id == bindparam("job_id"), _JOBS.c.thread_id == bindparam("thread_id"))


def _records(source: Session | Connection, statement, params: dict | None = None):  # noqa: ANN001, ANN202
    conn = source.connection() if isinstance(source, Session) else source
    return conn.execute(statement, params).all() if params is not None else conn.execute(statement).all()


def steps(session: Session, thread_id: str) -> list:
    """A workflow's steps in submission order (records with ``StepRow``'s columns)."""
    return _records(session, _THREAD_STEPS, {"thread_id": thread_id})


def job_view(job) -> JobView:  # noqa: ANN001 (a JobRow or a record with its columns)
    return JobView(
        job_id=job.job_id,
        thread_id=job.thread_id,
        kind=job.kind,
        status=job.status,
        backend=job.backend,
        model=job.model,
        selection_reason=job.selection_reason,
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        latency_ms=job.latency_ms,
        first_token_ms=job.first_token_ms,
        text=job.text,
        error_code=job.error_code,
        error_message=job.error_message,
        waiting_reason=job.waiting_reason,
        attempts=job.attempts,
        cost_cents=job.cost_cents,
        queued_at=job.queued_at,
        finished_at=job.finished_at,
        step_id=job.step_id,
        max_retries=job.max_retries,
        timeout_s=job.timeout_s,
        deadline=job.deadline,
        memories=json.loads(job.memories_json),
    )


def job(session: Session, thread_id: str, job_id: str) -> JobView | None:
    """One job of ``thread_id``, or None (unknown, or another thread's)."""
    rows = _records(session, _JOB, {"job_id": job_id, "thread_id": thread_id})
    return job_view(rows[0]) if rows else None


def thread_view(session: Session, thread_id: str) -> ThreadView | None:
    key = {"thread_id": thread_id}
    found = _records(session, _THREAD, key)
    if not found:
        return None
    thread = found[0]
    jobs = _records(session, _THREAD_JOBS, key)
    questions = _records(session, _THREAD_QUESTIONS, key)
    return ThreadView(
        thread_id=thread.thread_id,
        idea=thread.idea,
        channel=thread.channel,
        user_id=thread.user_id,
        origin=json.loads(thread.origin_json),
        status=thread.status,
        idea_type=thread.idea_type,
        clarity=thread.clarity,
        draft1=thread.draft1,
        draft2=thread.draft2,
        final_draft_number=thread.final_draft_number,
        completion_reason=thread.completion_reason,
        rating=thread.rating,
        rating_comment=thread.rating_comment,
        project=thread.project,
        private=thread.private,
        priority=thread.priority,
        answer_deadline=thread.answer_deadline,
        created_at=thread.created_at,
        updated_at=thread.updated_at,
        questions=[
            QuestionView(
                question_id=q.question_id,
                category=q.category,
                text=q.text,
                suggestions=json.loads(q.suggestions_json),
                answer=q.answer,
                template_id=q.template_id,
                slot=q.slot,
            )
            for q in questions
        ],
        jobs=[job_view(j) for j in jobs],
        kind=thread.kind,
        workflow_deadline=thread.workflow_deadline,
        steps=[
            StepView(
                step_id=st.step_id,
                job_id=st.job_id,
                status=st.status,
                reason=st.reason,
                depends_on=msgspec.json.decode(st.step_json, type=ev.WorkflowStep).depends_on,
            )
            for st in (steps(session, thread_id) if thread.kind == WORKFLOW else ())
        ],
        assumptions=applied(
            msgspec.json.decode(thread.assumptions_json, type=list[ev.Assumption]),
            msgspec.json.decode(thread.assumed_json, type=list[ev.Assumption]),
        ),
    )


def recent_threads(
    session: Session, limit: int, origin: dict[str, str] | None = None, user_id: str | None = None
) -> list[ThreadView]:
    """The newest ``limit`` threads, newest first; with ``origin``, only those whose origin holds each of its
    pairs (keys are checked against ``ORIGIN_KEY_PATTERN`` by the query's decoder: they go into a JSON path);
    with ``user_id``, only that user's."""
    ids = recent_thread_ids(session, limit, origin, user_id)
    return [v for v in (thread_view(session, i) for i in ids) if v is not None]


def recent_thread_ids(
    session: Session, limit: int, origin: dict[str, str] | None = None, user_id: str | None = None
) -> list[str]:
    """The ids of :func:`recent_threads`, newest first, without reading the threads."""
    statement = select(_THREADS.c.thread_id)
    if user_id is not None:
        statement = statement.where(_THREADS.c.user_id == user_id)
    for key, value in (origin or {}).items():
        statement = statement.where(func.json_extract(_THREADS.c.origin_json, f"$.{key}") == value)
    return [r[0] for r in _records(session, statement.order_by(_THREADS.c.created_at.desc()).limit(limit))]


def queue_depth(session: Session) -> QueueReply:
    """Every thread's open jobs by status and priority, and the workflow steps waiting for their dependencies, from
    the rows (what a replica answers when partitions split the in-memory state)."""
    rows = _records(session, select(_JOBS.c.status, _JOBS.c.priority).where(_JOBS.c.status.in_(OPEN_JOB_STATUSES)))
    waiting = _records(session, select(func.count()).select_from(_STEPS).where(_STEPS.c.status == "waiting"))
    return QueueReply(
        open_jobs=len(rows),
        by_status=dict(Counter(status for status, _ in rows)),
        by_priority={str(p): n for p, n in sorted(Counter(p for _, p in rows).items())},
        waiting_steps=waiting[0][0],
    )

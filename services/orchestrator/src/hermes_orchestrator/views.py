"""Reads of the orchestrator's read model for queries (every function takes an open ``sqlmodel.Session``; nothing
here writes): a thread with its jobs, questions and steps, one job, the recent threads."""

from __future__ import annotations

import json

import msgspec
from sqlmodel import Session, func, select

from hermes_proto import events as ev
from hermes_proto.queries import JobView, QuestionView, StepView, ThreadView

from hermes_orchestrator.tables import JobRow, QuestionRow, StepRow, ThreadRow


def steps(session: Session, thread_id: str) -> list[StepRow]:
    """A workflow's steps in submission order."""
    return list(session.exec(select(StepRow).where(StepRow.thread_id == thread_id).order_by(StepRow.position)).all())


def job_view(job: JobRow) -> JobView:
    return JobView(job_id=job.job_id, thread_id=job.thread_id, kind=job.kind, status=job.status,
                   backend=job.backend, model=job.model, selection_reason=job.selection_reason,
                   prompt_tokens=job.prompt_tokens, completion_tokens=job.completion_tokens,
                   latency_ms=job.latency_ms, first_token_ms=job.first_token_ms, text=job.text,
                   error_code=job.error_code, error_message=job.error_message,
                   waiting_reason=job.waiting_reason, attempts=job.attempts, cost_cents=job.cost_cents,
                   queued_at=job.queued_at, finished_at=job.finished_at, step_id=job.step_id,
                   max_retries=job.max_retries, timeout_s=job.timeout_s, deadline=job.deadline,
                   memories=json.loads(job.memories_json))


def job(session: Session, thread_id: str, job_id: str) -> JobView | None:
    """One job of ``thread_id``, or None (unknown, or another thread's)."""
    row = session.get(JobRow, job_id)
    return job_view(row) if row is not None and row.thread_id == thread_id else None


def thread_view(session: Session, thread_id: str) -> ThreadView | None:
    thread = session.get(ThreadRow, thread_id)
    if thread is None:
        return None
    jobs = session.exec(select(JobRow).where(JobRow.thread_id == thread_id).order_by(JobRow.queued_at)).all()
    questions = session.exec(select(QuestionRow).where(QuestionRow.thread_id == thread_id)
                             .order_by(QuestionRow.position)).all()
    return ThreadView(
        thread_id=thread.thread_id, idea=thread.idea, channel=thread.channel, user_id=thread.user_id,
        origin=json.loads(thread.origin_json), status=thread.status, idea_type=thread.idea_type,
        clarity=thread.clarity, draft1=thread.draft1, draft2=thread.draft2,
        final_draft_number=thread.final_draft_number, completion_reason=thread.completion_reason,
        rating=thread.rating, rating_comment=thread.rating_comment, project=thread.project,
        private=thread.private, priority=thread.priority,
        answer_deadline=thread.answer_deadline, created_at=thread.created_at, updated_at=thread.updated_at,
        questions=[QuestionView(question_id=q.question_id, category=q.category, text=q.text,
                                suggestions=json.loads(q.suggestions_json), answer=q.answer) for q in questions],
        jobs=[job_view(j) for j in jobs], kind=thread.kind, workflow_deadline=thread.workflow_deadline,
        steps=[StepView(step_id=st.step_id, job_id=st.job_id, status=st.status, reason=st.reason,
                        depends_on=msgspec.json.decode(st.step_json, type=ev.WorkflowStep).depends_on)
               for st in steps(session, thread_id)],
        assumptions=msgspec.json.decode(thread.assumptions_json, type=list[ev.Assumption]),
    )


def recent_threads(session: Session, limit: int, origin: dict[str, str] | None = None,
                   user_id: str | None = None) -> list[ThreadView]:
    """The newest ``limit`` threads, newest first; with ``origin``, only those whose origin holds each of its
    pairs (keys are checked against ``ORIGIN_KEY_PATTERN`` by the query's decoder: they go into a JSON path);
    with ``user_id``, only that user's."""
    statement = select(ThreadRow.thread_id)
    if user_id is not None:
        statement = statement.where(ThreadRow.user_id == user_id)
    for key, value in (origin or {}).items():
        statement = statement.where(func.json_extract(ThreadRow.origin_json, f"$.{key}") == value)
    ids = session.exec(statement.order_by(ThreadRow.created_at.desc()).limit(limit)).all()
    return [v for v in (thread_view(session, i) for i in ids) if v is not None]

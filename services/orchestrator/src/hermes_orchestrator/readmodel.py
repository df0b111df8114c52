"""SQLite read models (sqlmodel) and the projection that builds them from the log.

Tables: ``threads``, ``jobs``, ``workflow_steps``, ``questions``, ``backend_selections``, ``preferences``,
``memory_entries`` (every completed turn, indexed for full-text search by the SQLite FTS5 table ``memory_fts``) and
``projection_position`` (the last applied ``HERMES_EVENTS`` sequence, written in the
same transaction as the rows). Every value comes from an event, timestamps included,
so replaying the log into an empty database yields identical rows.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import singledispatch

import msgspec
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, func, select

from hermes_proto import events as ev
from hermes_proto import sqlstore
from hermes_proto.base import Event
from hermes_proto.queries import JobView, QueueReply, QuestionView, StepView, ThreadView
from hermes_proto.sessions import TURN_KINDS

from hermes_orchestrator import domain

PROJECTION = "orchestrator"


class ThreadRow(SQLModel, table=True):
    __tablename__ = "threads"

    thread_id: str = Field(primary_key=True)
    idea: str
    channel: str
    user_id: str
    origin_json: str = "{}"
    status: str
    correlation_id: str
    max_questions: int
    answer_timeout_s: float
    idea_type: str | None = None
    clarity: float | None = None
    draft1: str | None = None
    draft2: str | None = None
    final_draft_number: int | None = None
    completion_reason: str | None = None
    rating: int | None = None
    rating_comment: str | None = None
    project: str = "default"
    private: bool = False
    priority: int = 5
    answer_deadline: datetime | None = None
    kind: str = "idea"
    workflow_deadline: datetime | None = None
    created_at: datetime = Field(index=True)
    updated_at: datetime
    assumptions_json: str = "[]"
    """The learned preferences its draft 1 applied (``ThreadOpened.assumptions``, JSON)."""


class PreferenceRow(SQLModel, table=True):
    """A user's learned preference as its last ``PreferenceLearned`` left it (deleted by ``PreferenceForgotten``):
    what a draft-1 prompt may apply."""

    __tablename__ = "preferences"

    preference_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    category: str
    key: str
    value: str
    confidence: float
    expires_at: datetime | None = None


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"

    job_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    kind: str
    status: str = Field(index=True)
    priority: int
    messages_json: str
    max_tokens: int
    backend: str | None = None
    model: str | None = None
    selection_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    first_token_ms: float | None = None
    text: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    waiting_reason: str | None = None
    attempts: int = 0
    cost_cents: float = 0.0
    step_id: str | None = None
    max_retries: int | None = None
    timeout_s: float | None = None
    deadline: datetime | None = Field(default=None, index=True)
    closed_by: str | None = None
    """The id of the event that ended the job: ExecutionCompleted, ExecutionAbandoned or JobCancelled."""
    memories_json: str = "[]"
    """``JobQueued.memories``: the job ids of the earlier turns its prompt was given."""
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class StepRow(SQLModel, table=True):
    """One planned workflow step. ``status``: waiting, then its job's status, or skipped (``reason`` why)."""

    __tablename__ = "workflow_steps"

    job_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    step_id: str
    position: int
    step_json: str
    status: str = "waiting"
    reason: str | None = None


class QuestionRow(SQLModel, table=True):
    __tablename__ = "questions"

    question_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    position: int
    template_id: str
    category: str
    text: str
    suggestions_json: str = "[]"
    expected_value: float = 0.0
    answer: str | None = None
    answered_at: datetime | None = None


class BackendSelectionRow(SQLModel, table=True):
    __tablename__ = "backend_selections"

    event_id: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    thread_id: str
    backend: str
    model: str
    criteria: str
    reason: str
    candidates_json: str
    selected_at: datetime


class MemoryRow(SQLModel, table=True):
    """One completed turn (a job of a :data:`hermes_proto.sessions.TURN_KINDS` kind) as memory: its last user
    message and the reply. ``memory_fts`` indexes ``prompt`` and ``reply`` (external content, kept in step by
    triggers, so a row and its index entry are written in the same transaction)."""

    __tablename__ = "memory_entries"

    job_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    user_id: str = Field(index=True)
    channel: str
    prompt: str
    reply: str
    created_at: datetime


class SettingRow(SQLModel, table=True):
    """A user's value of an editable setting (the last ``SettingChanged`` of its key; deleted when set back)."""

    __tablename__ = "user_settings"

    key: str = Field(primary_key=True)
    value: str
    changed_by: str
    changed_at: datetime


class ProjectionPosition(SQLModel, table=True):
    __tablename__ = "projection_position"

    name: str = Field(primary_key=True)
    last_sequence: int = 0


READ_MODEL_TABLES = (ThreadRow, JobRow, StepRow, QuestionRow, BackendSelectionRow, PreferenceRow, MemoryRow,
                     SettingRow)
CLOSED_JOB_STATUSES = ("completed", "failed", "cancelled")


MEMORY_FTS_DDL = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS memory_fts USING fts5(prompt, reply, content='memory_entries', "
    "content_rowid='rowid', tokenize='porter unicode61')",
    "CREATE TRIGGER IF NOT EXISTS memory_fts_insert AFTER INSERT ON memory_entries BEGIN "
    "INSERT INTO memory_fts(rowid, prompt, reply) VALUES (new.rowid, new.prompt, new.reply); END",
    "CREATE TRIGGER IF NOT EXISTS memory_fts_delete AFTER DELETE ON memory_entries BEGIN "
    "INSERT INTO memory_fts(memory_fts, rowid, prompt, reply) VALUES ('delete', old.rowid, old.prompt, old.reply); "
    "END",
    "INSERT INTO memory_fts(memory_fts) VALUES ('rebuild')",
)
"""SQLite FTS5 over ``memory_entries`` (Porter stemming). Rebuilt from the table at every start, so an index left
behind by a dropped schema never disagrees with the rows."""


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created (SQLite in WAL mode, see :mod:`hermes_proto.sqlstore`) and,
    on SQLite, the FTS5 memory index. Memory search needs SQLite: on another database it finds nothing."""
    engine = sqlstore.make_engine(url, SQLModel.metadata)
    if engine.dialect.name == "sqlite":
        with engine.begin() as conn:
            for statement in MEMORY_FTS_DDL:
                conn.exec_driver_sql(statement)
    return engine


def load_position(session: Session) -> int:
    return sqlstore.load_position(session, ProjectionPosition, PROJECTION)


def save_position(session: Session, sequence: int) -> None:
    sqlstore.save_position(session, ProjectionPosition, PROJECTION, sequence)


def _naive(ts: datetime) -> datetime:
    """All our timestamps are UTC; they are stored timezone-aware."""
    return ts.astimezone(UTC)


def _touch(session: Session, event: Event) -> ThreadRow | None:
    thread = session.get(ThreadRow, event.aggregate_id)
    if thread is not None:
        thread.updated_at = _naive(event.occurred_at)
        session.add(thread)
    return thread


@singledispatch
def apply(event: Event, session: Session) -> None:
    """Apply one event to the rows (events this projection does not use are ignored)."""


@apply.register
def _(e: ev.ThreadOpened, session: Session) -> None:
    if session.get(ThreadRow, e.aggregate_id) is not None:
        return
    session.add(ThreadRow(thread_id=e.aggregate_id, idea=e.idea, channel=e.channel, user_id=e.user_id,
                          origin_json=json.dumps(e.origin, sort_keys=True),
                          status=domain.ACTIVE if e.kind == domain.CHAT else domain.DRAFTING,
                          correlation_id=e.correlation_id, max_questions=e.max_questions,
                          answer_timeout_s=e.answer_timeout_s, project=e.project, private=e.private,
                          priority=e.priority, kind=e.kind, created_at=_naive(e.occurred_at),
                          updated_at=_naive(e.occurred_at),
                          assumptions_json=msgspec.json.encode(e.assumptions).decode()))


@apply.register
def _(e: ev.SettingChanged, session: Session) -> None:
    row = session.get(SettingRow, e.key)
    if e.value is None:
        if row is not None:
            session.delete(row)
        return
    row = row or SettingRow(key=e.key, value=e.value, changed_by=e.by, changed_at=_naive(e.occurred_at))
    row.value, row.changed_by, row.changed_at = e.value, e.by, _naive(e.occurred_at)
    session.add(row)


def user_settings(session: Session) -> dict[str, str]:
    """``{key: value}`` of every setting a user changed."""
    return {r.key: r.value for r in session.exec(select(SettingRow)).all()}


@apply.register
def _(e: ev.PreferenceLearned, session: Session) -> None:
    row = session.get(PreferenceRow, e.aggregate_id) or PreferenceRow(
        preference_id=e.aggregate_id, user_id=e.user_id, category=e.category, key=e.key, value=e.value,
        confidence=e.confidence)
    row.value, row.confidence = e.value, e.confidence
    row.expires_at = _naive(e.expires_at) if e.expires_at is not None else None
    session.add(row)


@apply.register
def _(e: ev.PreferenceForgotten, session: Session) -> None:
    row = session.get(PreferenceRow, e.aggregate_id)
    if row is not None:
        session.delete(row)


def usable_preferences(session: Session, user_id: str, threshold: float, now: datetime) -> list[ev.Assumption]:
    """``user_id``'s preferences with ``confidence >= threshold`` that have not expired at ``now``, ordered by
    category and key, as the assumptions a draft-1 prompt applies."""
    rows = session.exec(select(PreferenceRow).where(PreferenceRow.user_id == user_id)
                        .where(PreferenceRow.confidence >= threshold)
                        .order_by(PreferenceRow.category, PreferenceRow.key)).all()
    return [ev.Assumption(preference_id=r.preference_id, category=r.category, key=r.key, value=r.value,
                          confidence=r.confidence)
            for r in rows if r.expires_at is None or _aware(r.expires_at) > now]


def _aware(ts: datetime) -> datetime:
    """A stored timestamp back as UTC (SQLite gives it back naive)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@apply.register
def _(e: ev.WorkflowPlanned, session: Session) -> None:
    thread = _touch(session, e)
    if thread is None:
        return
    if e.timeout_s:
        thread.workflow_deadline = _naive(e.occurred_at) + timedelta(seconds=e.timeout_s)
    for position, step in enumerate(e.steps):
        job_id = domain.step_job_id(e.aggregate_id, step.step_id)
        if session.get(StepRow, job_id) is None:
            session.add(StepRow(job_id=job_id, thread_id=e.aggregate_id, step_id=step.step_id, position=position,
                                step_json=msgspec.json.encode(step).decode()))


def _step_status(session: Session, job_id: str, status: str, reason: str | None = None) -> None:
    step = session.get(StepRow, job_id)
    if step is not None and step.status not in domain.STEP_FINAL:
        step.status, step.reason = status, reason
        session.add(step)


@apply.register
def _(e: ev.JobQueued, session: Session) -> None:
    if session.get(JobRow, e.job_id) is not None:
        return
    _touch(session, e)
    queued_at = _naive(e.occurred_at)
    session.add(JobRow(job_id=e.job_id, thread_id=e.aggregate_id, kind=e.kind, status="queued",
                       priority=e.priority, max_tokens=e.max_tokens, queued_at=queued_at,
                       messages_json=json.dumps([{"role": m.role, "content": m.content} for m in e.messages]),
                       step_id=e.step_id, max_retries=e.max_retries, timeout_s=e.timeout_s,
                       memories_json=json.dumps(e.memories),
                       deadline=queued_at + timedelta(seconds=e.timeout_s) if e.timeout_s else None))
    if e.step_id:
        _step_status(session, e.job_id, "queued")


@apply.register
def _(e: ev.BackendSelected, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None:
        job.backend, job.model, job.selection_reason = e.backend, e.model, e.reason
        job.attempts = max(job.attempts, e.attempt)
        if job.status in ("queued", "retrying"):
            job.status, job.waiting_reason = "dispatched", None
            if job.step_id:
                _step_status(session, job.job_id, job.status)
        session.add(job)
    sqlstore.insert_absent(session, BackendSelectionRow(
        event_id=e.event_id, job_id=e.job_id, thread_id=e.aggregate_id, backend=e.backend, model=e.model,
        criteria=e.criteria, reason=e.reason, selected_at=_naive(e.occurred_at),
        candidates_json=json.dumps([{"backend": c.backend, "model": c.model, "score": c.score,
                                     "rejected": c.rejected} for c in e.candidates])))


@apply.register
def _(e: ev.ExecutionStarted, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status in ("queued", "dispatched"):
        job.status, job.started_at = "running", _naive(e.occurred_at)
        job.backend, job.model = e.backend, e.model
        session.add(job)
        if job.step_id:
            _step_status(session, job.job_id, job.status)


@apply.register
def _(e: ev.ExecutionCompleted, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status not in CLOSED_JOB_STATUSES:
        job.status, job.text, job.finished_at, job.closed_by = "completed", e.text, _naive(e.occurred_at), e.event_id
        job.backend, job.model = e.backend, e.model
        job.prompt_tokens, job.completion_tokens = e.prompt_tokens, e.completion_tokens
        job.latency_ms, job.first_token_ms = e.latency_ms, e.first_token_ms
        session.add(job)
        if job.step_id:
            _step_status(session, job.job_id, "completed")
        _remember(session, job, e)


def _remember(session: Session, job: JobRow, e: ev.ExecutionCompleted) -> None:
    """A completed turn becomes a memory: its last user message and the reply, under its thread's user. A private
    thread's turns do not: a memory may be given to a later prompt that goes to a remote backend."""
    thread = session.get(ThreadRow, job.thread_id)
    if job.kind not in TURN_KINDS or thread is None or thread.private:
        return
    users = [m["content"] for m in json.loads(job.messages_json) if m["role"] == "user"]
    sqlstore.insert_absent(session, MemoryRow(job_id=job.job_id, thread_id=job.thread_id, user_id=thread.user_id, channel=thread.channel,
                          prompt=users[-1] if users else "", reply=e.text, created_at=_naive(e.occurred_at)))


@apply.register
def _(e: ev.ExecutionFailed, session: Session) -> None:
    """One attempt failed; the router decides whether another follows (ExecutionAbandoned ends the job)."""
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status not in CLOSED_JOB_STATUSES:
        job.status = "retrying"
        job.error_code, job.error_message = e.error_code, e.message
        session.add(job)


@apply.register
def _(e: ev.ExecutionAbandoned, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status not in CLOSED_JOB_STATUSES:
        job.status, job.finished_at, job.closed_by = "failed", _naive(e.occurred_at), e.event_id
        job.error_code, job.error_message = e.error_code, e.message
        session.add(job)
        if job.step_id:
            _step_status(session, job.job_id, "failed")


@apply.register
def _(e: ev.JobDeferred, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status in ("queued", "retrying"):
        job.waiting_reason = e.reason
        session.add(job)


@apply.register
def _(e: ev.CostRecorded, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None:
        job.cost_cents = e.cost_cents
        session.add(job)


@apply.register
def _(e: ev.JobFailed, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None:
        job.status = "failed"
        job.error_code, job.error_message = e.error_code, e.message
        job.finished_at = job.finished_at or _naive(e.occurred_at)
        job.closed_by = job.closed_by or e.event_id
        session.add(job)
    step = session.get(StepRow, e.job_id) if job is not None and job.step_id else None
    if step is not None:  # a timed-out step was cancelled first: it ends as failed
        step.status = "failed"
        session.add(step)


@apply.register
def _(e: ev.JobCancelled, session: Session) -> None:
    job = session.get(JobRow, e.job_id)
    if job is not None and job.status not in CLOSED_JOB_STATUSES:
        job.status, job.finished_at, job.closed_by = "cancelled", _naive(e.occurred_at), e.event_id
        job.error_code, job.error_message, job.waiting_reason = e.reason, e.message, None
        session.add(job)
        if job.step_id:
            _step_status(session, e.job_id, "cancelled", e.reason)


@apply.register
def _(e: ev.JobSkipped, session: Session) -> None:
    _step_status(session, e.job_id, "skipped", e.reason)


@apply.register
def _(e: ev.DraftPresented, session: Session) -> None:
    thread = _touch(session, e)
    if thread is None:
        return
    if e.draft_number == 1:
        thread.draft1 = e.text
        if thread.status == domain.DRAFTING:
            thread.status = domain.AWAITING_ANSWERS
            thread.answer_deadline = _naive(e.occurred_at) + timedelta(seconds=thread.answer_timeout_s)
    else:
        thread.draft2 = e.text


@apply.register
def _(e: ev.QuestionsProposed, session: Session) -> None:
    thread = _touch(session, e)
    # The first proposal of a thread wins and is capped at its max_questions: a second producer (or a
    # replayed learner) can neither add questions nor exceed the thread's limit.
    if thread is None or thread.idea_type is not None:
        return
    thread.idea_type, thread.clarity = e.idea_type, e.clarity
    for position, q in enumerate(e.questions[:thread.max_questions]):
        sqlstore.insert_absent(session, QuestionRow(
            question_id=q.question_id, thread_id=e.aggregate_id, position=position, template_id=q.template_id,
            category=q.category, text=q.text, suggestions_json=json.dumps(q.suggestions),
            expected_value=q.expected_value))


@apply.register
def _(e: ev.ThreadRated, session: Session) -> None:
    thread = _touch(session, e)
    if thread is not None:
        thread.rating, thread.rating_comment = e.rating, e.comment or None


@apply.register
def _(e: ev.AnswersRecorded, session: Session) -> None:
    thread = _touch(session, e)
    if thread is None:
        return
    if thread.status == domain.AWAITING_ANSWERS:
        thread.status = domain.REFINING
        thread.answer_deadline = None
    for a in e.answers:
        question = session.get(QuestionRow, a.question_id)
        if question is not None:
            question.answer, question.answered_at = a.text, _naive(e.occurred_at)
            session.add(question)


@apply.register
def _(e: ev.ThreadCompleted, session: Session) -> None:
    thread = _touch(session, e)
    if thread is not None and thread.status not in domain.FINAL:
        thread.status = domain.COMPLETED
        thread.final_draft_number, thread.completion_reason = e.final_draft_number, e.reason
        thread.answer_deadline = None


@apply.register
def _(e: ev.ThreadFailed, session: Session) -> None:
    thread = _touch(session, e)
    if thread is not None and thread.status not in domain.FINAL:
        thread.status = domain.FAILED
        thread.completion_reason = f"{e.error_code}: {e.message}"
        thread.answer_deadline = None


# ---- reads -------------------------------------------------------------------------------------


def load_state(session: Session, thread_id: str) -> domain.ThreadState | None:
    """The decision state of one thread, or None when the thread is unknown."""
    thread = session.get(ThreadRow, thread_id)
    if thread is None:
        return None
    jobs = session.exec(select(JobRow).where(JobRow.thread_id == thread_id)).all()
    questions = session.exec(select(QuestionRow).where(QuestionRow.thread_id == thread_id)
                             .order_by(QuestionRow.position)).all()
    return domain.ThreadState(
        thread_id=thread.thread_id, idea=thread.idea, status=thread.status, correlation_id=thread.correlation_id,
        max_questions=thread.max_questions, draft1=thread.draft1, draft2=thread.draft2,
        final_draft_number=thread.final_draft_number, project=thread.project, private=thread.private,
        priority=thread.priority, kind=thread.kind,
        assumptions=msgspec.json.decode(thread.assumptions_json, type=list[ev.Assumption]),
        jobs={j.job_id: domain.JobState(j.job_id, j.kind, j.status, j.step_id, j.text, j.closed_by) for j in jobs},
        questions=[domain.QuestionState(q.question_id, q.text, q.answer) for q in questions],
        steps={st.step_id: domain.StepState(msgspec.json.decode(st.step_json, type=ev.WorkflowStep), st.job_id,
                                            st.status) for st in (_steps(session, thread_id)
                                                                  if thread.kind == "workflow" else ())},
    )


def _steps(session: Session, thread_id: str) -> list[StepRow]:
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
               for st in _steps(session, thread_id)],
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


def awaiting_deadlines(session: Session) -> list[tuple[str, datetime]]:
    """Threads waiting for answers, with their deadlines (naive UTC)."""
    rows = session.exec(select(ThreadRow.thread_id, ThreadRow.answer_deadline)
                        .where(ThreadRow.status == domain.AWAITING_ANSWERS)).all()
    return [(tid, deadline) for tid, deadline in rows if deadline is not None]


def open_job_deadlines(session: Session) -> list[tuple[str, str, datetime]]:
    """``(thread_id, job_id, deadline)`` of every open job with a timeout (naive or aware UTC)."""
    rows = session.exec(select(JobRow.thread_id, JobRow.job_id, JobRow.deadline)
                        .where(col(JobRow.status).in_(domain.OPEN_JOB_STATUSES))
                        .where(col(JobRow.deadline).is_not(None))).all()
    return [(tid, jid, deadline) for tid, jid, deadline in rows]


def workflow_deadlines(session: Session) -> list[tuple[str, datetime]]:
    """``(thread_id, deadline)`` of every unfinished workflow with a timeout."""
    rows = session.exec(select(ThreadRow.thread_id, ThreadRow.workflow_deadline)
                        .where(col(ThreadRow.status).not_in(domain.FINAL))
                        .where(col(ThreadRow.workflow_deadline).is_not(None))).all()
    return [(tid, deadline) for tid, deadline in rows]


def job_is_open(session: Session, job_id: str) -> bool:
    job = session.get(JobRow, job_id)
    return job is not None and job.status in domain.OPEN_JOB_STATUSES


def queue_depth(session: Session) -> QueueReply:
    """The open jobs by status and priority, and the workflow steps waiting for their dependencies."""
    rows = session.exec(select(JobRow.status, JobRow.priority)
                        .where(col(JobRow.status).in_(domain.OPEN_JOB_STATUSES))).all()
    waiting = session.exec(select(StepRow.job_id).where(StepRow.status == "waiting")).all()
    return QueueReply(open_jobs=len(rows), by_status=dict(Counter(status for status, _ in rows)),
                      by_priority={str(p): n for p, n in sorted(Counter(p for _, p in rows).items())},
                      waiting_steps=len(waiting))

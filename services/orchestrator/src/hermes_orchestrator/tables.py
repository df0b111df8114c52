"""The orchestrator's read-model tables (sqlmodel definitions, SQLite in WAL mode by default).

``threads``, ``jobs``, ``workflow_steps``, ``questions``, ``backend_selections``, ``preferences``, ``memory_entries``
(every completed turn, indexed for full-text search by the SQLite FTS5 table ``memory_fts``), ``user_settings`` and
``projection_position`` (the last applied ``HERMES_EVENTS`` sequence, written in the same transaction as the rows).
Every value comes from an event, timestamps included, so replaying the log into an empty database yields identical
rows. Written by :mod:`hermes_orchestrator.readmodel`, read by :mod:`hermes_orchestrator.views` and
:mod:`hermes_orchestrator.sessions`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from hermes_proto import sqlstore

from hermes_orchestrator.agent_tables import AGENT_TABLES


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
    assumed_json: str = "[]"
    """The facts the learner's first proposal applies (``QuestionsProposed.assumptions``, JSON): those draft 1 lacked
    make a draft 2."""
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
    scope: str = ""
    wording: str = ""
    """The user's words for ``value``: what a prompt shows."""


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
    slot: str = ""


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


READ_MODEL_TABLES = (
    ThreadRow,
    JobRow,
    StepRow,
    QuestionRow,
    BackendSelectionRow,
    PreferenceRow,
    MemoryRow,
    SettingRow,
    *AGENT_TABLES,
)


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

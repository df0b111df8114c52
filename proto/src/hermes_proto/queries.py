"""Read-side contract: NATS request/reply queries answered from the orchestrator's read models.

Request ``hermes.query.thread`` with :class:`ThreadQuery` → :class:`ThreadReply`.
Request ``hermes.query.job`` with :class:`JobQuery` → :class:`JobReply`.
Request ``hermes.query.threads`` with :class:`ThreadListQuery` → :class:`ThreadListReply`.
Times are ISO-8601 UTC; latencies ms; tokens are model tokens.
"""

from __future__ import annotations

from datetime import datetime

import msgspec


class QuestionView(msgspec.Struct, kw_only=True):
    question_id: str
    category: str
    text: str
    suggestions: list[str] = []
    answer: str | None = None


class JobView(msgspec.Struct, kw_only=True):
    """``status``: queued, dispatched, running, completed, failed."""

    job_id: str
    thread_id: str
    kind: str
    status: str
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
    queued_at: datetime | None = None
    finished_at: datetime | None = None


class ThreadView(msgspec.Struct, kw_only=True):
    """``status``: drafting, awaiting_answers, refining, completed, failed."""

    thread_id: str
    idea: str
    channel: str
    user_id: str
    origin: dict[str, str]
    status: str
    idea_type: str | None = None
    clarity: float | None = None
    draft1: str | None = None
    draft2: str | None = None
    final_draft_number: int | None = None
    completion_reason: str | None = None
    rating: int | None = None
    """The user's 1-5 rating of the final draft, once rated."""
    rating_comment: str | None = None
    answer_deadline: datetime | None = None
    created_at: datetime
    updated_at: datetime
    questions: list[QuestionView] = []
    jobs: list[JobView] = []


class ThreadQuery(msgspec.Struct, kw_only=True):
    thread_id: str
    min_sequence: int = 0
    """Read-your-writes: wait (bounded) until the read model has applied this stream sequence."""


class ThreadReply(msgspec.Struct, kw_only=True):
    found: bool
    thread: ThreadView | None = None


class JobQuery(msgspec.Struct, kw_only=True):
    thread_id: str
    job_id: str


class JobReply(msgspec.Struct, kw_only=True):
    found: bool
    job: JobView | None = None


class ThreadListQuery(msgspec.Struct, kw_only=True):
    limit: int = 50


class ThreadListReply(msgspec.Struct, kw_only=True):
    threads: list[ThreadView]


QUERY_THREADS = "hermes.query.threads"

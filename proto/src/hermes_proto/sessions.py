"""Read-side contract of sessions, memory, SOUL.md and training exports (orchestrator, NATS request/reply, msgspec JSON).

A session is a thread seen as a conversation: an idea thread (its draft jobs are its turns) or a chat session
(kind ``chat``, opened by the first ``SubmitChat`` of a session key; every chat job is a turn). A turn is one
model call with what was sent (``messages``, SOUL and memory markers included), the reply, and its backend, model,
tokens, cost (cents), latency (ms) and the thread's rating.

Request ``hermes.query.sessions`` with :class:`SessionsQuery` → :class:`SessionsReply`.
Request ``hermes.query.session`` with :class:`SessionQuery` → :class:`SessionReply`.
Request ``hermes.query.memory`` with :class:`MemoryQuery` → :class:`MemoryReply`.
Request ``hermes.query.export`` with :class:`ExportQuery` → :class:`ExportReply`.
Request ``hermes.control.soul`` with :class:`SoulRequest` → :class:`SoulReply`.
Errors are :class:`hermes_proto.queries.ErrorReply` (``bad_request``).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

import msgspec

from hermes_proto import threads
from hermes_proto.base import ChatMessage
from hermes_proto.queries import StreamSequence

TURN_KINDS = threads.TURN_KINDS
"""Job kinds that are turns of a conversation (``classify`` and ``compare`` jobs are Hermes's own calls)."""


class TurnView(msgspec.Struct, kw_only=True):
    """One model call of a session. ``messages``: the prompt as sent; ``reply``: the model's text (None until it
    completed); ``memories``: job ids of the earlier turns injected into the prompt; ``rating``: the thread's 1-5
    rating when this turn produced its final draft."""

    job_id: str
    kind: str
    status: str
    messages: list[ChatMessage]
    reply: str | None = None
    backend: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cents: float = 0.0
    latency_ms: float | None = None
    rating: int | None = None
    memories: list[str] = []
    queued_at: datetime
    finished_at: datetime | None = None


class SessionView(msgspec.Struct, kw_only=True):
    """``session_id`` is the thread id; ``session_key`` the producer's key (a chat session's, or the one an idea
    thread of the ``hermes`` model was opened under; None for other idea threads); ``title`` the idea or the first
    user message; ``turns`` in queue order (empty in lists); ``turns_omitted``: older turns left out of ``turns``
    (asked for the last few only, or the whole would not fit one NATS message)."""

    session_id: str
    session_key: str | None = None
    kind: str
    channel: str
    user_id: str
    status: str
    title: str
    rating: int | None = None
    turn_count: int = 0
    created_at: datetime
    updated_at: datetime
    turns: list[TurnView] = []
    turns_omitted: int = 0


class SessionsQuery(msgspec.Struct, kw_only=True):
    """The newest ``limit`` (1-500) sessions, optionally of one ``user_id`` and one ``channel``."""

    user_id: str | None = None
    channel: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50
    min_sequence: StreamSequence = 0


class SessionsReply(msgspec.Struct, kw_only=True):
    sessions: list[SessionView]


class SessionQuery(msgspec.Struct, kw_only=True):
    """One session with its turns (only the last ``last_turns`` when given); ``min_sequence``: read-your-writes, as
    for threads."""

    session_id: str
    min_sequence: StreamSequence = 0
    last_turns: Annotated[int, msgspec.Meta(ge=1, le=10_000)] | None = None


class SessionReply(msgspec.Struct, kw_only=True):
    found: bool
    session: SessionView | None = None


class MemoryHit(msgspec.Struct, kw_only=True):
    """One captured turn matching a search: ``snippet`` is the matching text with the hits in ``[…]``; ``score`` is
    SQLite FTS5's bm25 (lower is a better match)."""

    job_id: str
    session_id: str
    channel: str
    user_id: str
    prompt: str
    reply: str
    snippet: str
    score: float
    created_at: datetime


class MemoryQuery(msgspec.Struct, kw_only=True):
    """Full-text search (SQLite FTS5) over every completed turn's last user message and reply. ``q``: words (1-500
    characters; FTS5 syntax is not passed through: each word of 3 or more characters that is not a stopword is matched
    as a term, any of them); ``user_id``: only that user's turns."""

    q: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    user_id: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20
    min_sequence: StreamSequence = 0
    """Read-your-writes: search once the read model applied this ``HERMES_EVENTS`` sequence (bounded wait)."""


class MemoryReply(msgspec.Struct, kw_only=True):
    hits: list[MemoryHit]


ExportFormat = Literal["openai", "sharegpt", "dpo"]
EXPORT_DAYS = (date(2000, 1, 1), date(2999, 12, 31))
"""The first and last day an export filter (``since``/``until``) may name: every turn is queued between them, and a
bound outside would overflow the day arithmetic (``9999-12-31`` plus one day)."""


def export_day(value: str | None, field: str) -> date | None:
    """``value``, an ISO date ``YYYY-MM-DD``, as a date (None stays None). Raises ``ValueError``, its message naming
    ``field``, when it is no such date or lies outside :data:`EXPORT_DAYS`."""
    if value is None:
        return None
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{field} must be an ISO date (YYYY-MM-DD), not {value[:40]!r}") from None
    first, last = EXPORT_DAYS
    if not first <= day <= last:
        raise ValueError(f"{field} must be between {first} and {last}, not {value}")
    return day


class ExportQuery(msgspec.Struct, kw_only=True):
    """One page of a training export, in turn order (queue time, then job id). ``format``: ``openai`` (OpenAI chat
    fine-tuning JSONL: ``{"messages": [...]}``), ``sharegpt`` (``{"conversations": [{"from", "value"}]}``) or
    ``dpo`` (preference pairs ``{"prompt", "chosen", "rejected"}``). A page holds at most ``limit`` records and
    stops earlier (never before its first) when more would not fit one NATS message. Filters: ``since``/``until`` (ISO dates,
    inclusive, on the day a turn was queued, UTC), ``channel``, ``min_rating`` (only turns of threads rated at
    least this), ``user_id``. ``after``: the cursor of the previous page."""

    format: ExportFormat = "openai"
    since: str | None = None
    until: str | None = None
    channel: str | None = None
    min_rating: Annotated[int, msgspec.Meta(ge=1, le=5)] | None = None
    user_id: str | None = None
    after: str | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 200
    min_sequence: StreamSequence = 0


class ExportReply(msgspec.Struct, kw_only=True):
    """``lines``: JSON texts, one record each; ``next_after``: pass it as ``after`` for the next page (None: done)."""

    lines: list[str]
    next_after: str | None = None


class SoulRequest(msgspec.Struct, kw_only=True):
    """Read SOUL.md (``text`` None) or replace it (at most 20,000 characters)."""

    text: Annotated[str, msgspec.Meta(max_length=20_000)] | None = None


class SoulReply(msgspec.Struct, kw_only=True):
    """The system prompt every channel's turns start with, and where it lives."""

    text: str
    path: str

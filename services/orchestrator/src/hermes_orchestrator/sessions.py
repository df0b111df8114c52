"""Sessions, memory and training exports: reads of the orchestrator's read model (every function takes an open
``sqlmodel.Session``; nothing here writes).

A session is a thread seen as a conversation and a turn one of its jobs of a :data:`TURN_KINDS` kind
(:mod:`hermes_proto.sessions`). Everything read here was projected from the log, so a replay into an empty
database gives the same sessions, the same memory and byte-identical exports.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time, timedelta

import msgspec
from sqlalchemy import and_, or_, text
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, select

from hermes_proto.base import ChatMessage
from hermes_proto.costs import estimate_tokens
from hermes_proto.sessions import (
    EXPORT_DAYS,
    TURN_KINDS,
    ExportQuery,
    ExportReply,
    MemoryHit,
    SessionView,
    TurnView,
    export_day,
)

from hermes_orchestrator import domain
from hermes_orchestrator.tables import JobRow, ThreadRow

MEMORY_PROMPT_CHARS = 300
MEMORY_REPLY_CHARS = 500
"""A memory marker carries at most this much of the earlier turn's prompt and reply (characters), so one long turn
cannot take the whole memory budget."""

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be but by can could do for from has have help how i in into is it its me my of on or our "
    "please should so that the their them then there these this to was we what when where which who why will with "
    "would you your".split()
)
"""Words too common to say what a turn is about: left out of the terms a new prompt is matched by."""


def match_expression(text_: str, max_terms: int = 32) -> str | None:
    """An FTS5 query matching any word of ``text_`` (words of 3+ characters, not :data:`STOPWORDS`, each quoted so
    FTS5 syntax in user text is inert), or None when no word is left."""
    terms: list[str] = []
    for word in _WORD.findall(text_.lower()):
        if len(word) >= 3 and word not in STOPWORDS and word not in terms:
            terms.append(word)
    return " OR ".join(f'"{t}"' for t in terms[:max_terms]) or None


def search_memory(
    session: Session, q: str, user_id: str | None, limit: int, exclude_thread: str | None = None
) -> list[MemoryHit]:
    """Completed turns matching ``q`` (any of its words), best bm25 first, of ``user_id`` when given, leaving out
    ``exclude_thread``'s turns. Empty when ``q`` has no searchable word or the database is not SQLite."""
    expression = match_expression(q)
    if expression is None or session.get_bind().dialect.name != "sqlite":
        return []
    rows = session.execute(
        text(
            "SELECT m.job_id, m.thread_id, m.channel, m.user_id, m.prompt, m.reply, m.created_at, "
            "snippet(memory_fts, -1, '[', ']', '…', 16) AS snip, bm25(memory_fts) AS score "
            "FROM memory_fts JOIN memory_entries AS m ON m.rowid = memory_fts.rowid "
            "WHERE memory_fts MATCH :q AND (:user IS NULL OR m.user_id = :user) AND (:skip IS NULL OR m.thread_id != :skip) "
            "ORDER BY score, m.created_at DESC, m.job_id LIMIT :n"
        ),
        {"q": expression, "user": user_id, "skip": exclude_thread, "n": limit},
    ).all()
    return [
        MemoryHit(
            job_id=r.job_id,
            session_id=r.thread_id,
            channel=r.channel,
            user_id=r.user_id,
            prompt=r.prompt,
            reply=r.reply,
            snippet=r.snip,
            score=round(float(r.score), 6),
            created_at=_datetime(r.created_at),
        )
        for r in rows
    ]


_RECALL_SQL = (
    "SELECT m.job_id, m.prompt, m.reply, m.created_at FROM memory_fts JOIN memory_entries AS m "
    "ON m.rowid = memory_fts.rowid WHERE memory_fts MATCH ? AND m.user_id = ? AND m.thread_id != ? "
    "ORDER BY bm25(memory_fts), m.created_at DESC, m.job_id LIMIT ?"
)
""":func:`search_memory`'s ranking without its snippets and hit details: what a new prompt's recall needs."""


def recall(
    source: Session | Connection, user_id: str, about: str, exclude_thread: str, budget_tokens: int, max_items: int
) -> tuple[domain.Memory, ...]:
    """The memories a new prompt about ``about`` is given: ``user_id``'s best-matching earlier turns outside
    ``exclude_thread``, in match order (bm25, as :func:`search_memory` ranks), as many as fit ``budget_tokens``
    (estimated tokens of their markers, :func:`hermes_proto.costs.estimate_tokens`) up to ``max_items``. Empty with a
    budget of 0, no searchable word, or a database other than SQLite. ``source``: a session or a Core connection."""
    if budget_tokens <= 0 or max_items <= 0:
        return ()
    conn = source.connection() if isinstance(source, Session) else source
    expression = match_expression(about)
    if expression is None or conn.dialect.name != "sqlite":
        return ()
    rows = conn.exec_driver_sql(_RECALL_SQL, (expression, user_id, exclude_thread, max_items * 3)).all()
    chosen: list[domain.Memory] = []
    spent = 0
    for job_id, prompt, reply, created_at in rows:
        memory = domain.Memory(
            job_id=job_id,
            day=_datetime(created_at).date().isoformat(),
            prompt=_clip(prompt, MEMORY_PROMPT_CHARS),
            reply=_clip(reply, MEMORY_REPLY_CHARS),
        )
        cost = estimate_tokens(domain.memory_marker(memory))
        if spent + cost > budget_tokens:
            continue
        chosen.append(memory)
        spent += cost
        if len(chosen) == max_items:
            break
    return tuple(chosen)


def _clip(text_: str, limit: int) -> str:
    text_ = " ".join(text_.split())
    return text_ if len(text_) <= limit else text_[: limit - 1] + "…"


def _datetime(value: object) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


# ---- sessions -------------------------------------------------------------------------------------------------


def _turn_rows(session: Session, thread_ids: list[str]) -> list[JobRow]:
    return list(
        session.exec(
            select(JobRow)
            .where(col(JobRow.thread_id).in_(thread_ids))
            .where(col(JobRow.kind).in_(TURN_KINDS))
            .order_by(JobRow.queued_at, JobRow.job_id)
        ).all()
    )


def _final_job(thread: ThreadRow, turns: list[JobRow]) -> str | None:
    """The job whose text is the thread's final draft (it carries the thread's rating)."""
    wanted = {1: "draft1", 2: "draft2"}.get(thread.final_draft_number or 0)
    return next((j.job_id for j in turns if j.kind == wanted and j.status == "completed"), None)


def turn_view(job: JobRow, rating: int | None) -> TurnView:
    return TurnView(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status,
        messages=msgspec.json.decode(job.messages_json, type=list[ChatMessage]),
        reply=job.text,
        backend=job.backend,
        model=job.model,
        prompt_tokens=job.prompt_tokens,
        completion_tokens=job.completion_tokens,
        cost_cents=job.cost_cents,
        latency_ms=job.latency_ms,
        rating=rating,
        memories=json.loads(job.memories_json),
        queued_at=job.queued_at,
        finished_at=job.finished_at,
    )


def _session(thread: ThreadRow, turns: list[JobRow], with_turns: bool) -> SessionView:
    final = _final_job(thread, turns)
    return SessionView(
        session_id=thread.thread_id,
        session_key=json.loads(thread.origin_json).get("session_key"),
        kind=thread.kind,
        channel=thread.channel,
        user_id=thread.user_id,
        status=thread.status,
        title=thread.idea,
        rating=thread.rating,
        turn_count=len(turns),
        created_at=thread.created_at,
        updated_at=thread.updated_at,
        turns=[turn_view(j, thread.rating if j.job_id == final else None) for j in turns] if with_turns else [],
    )


def session_view(session: Session, session_id: str, last_turns: int | None = None) -> SessionView | None:
    """One session with its turns in queue order (only the last ``last_turns`` when given), or None when there is
    no such thread."""
    thread = session.get(ThreadRow, session_id)
    if thread is None:
        return None
    view = _session(thread, _turn_rows(session, [session_id]), True)
    if last_turns is not None and len(view.turns) > last_turns:
        view.turns_omitted = len(view.turns) - last_turns
        view.turns = view.turns[-last_turns:]
    return view


def fit(view: SessionView | None, budget_bytes: int) -> SessionView | None:
    """``view`` with its oldest turns left out (counted in ``turns_omitted``) until its JSON takes at most
    ``budget_bytes`` (never fewer than its last turn)."""
    while view is not None and len(view.turns) > 1 and len(msgspec.json.encode(view)) > budget_bytes:
        drop = max(1, len(view.turns) // 4)
        view.turns, view.turns_omitted = view.turns[drop:], view.turns_omitted + drop
    return view


def recent_sessions(session: Session, user_id: str | None, channel: str | None, limit: int) -> list[SessionView]:
    """The ``limit`` most recently active sessions (newest first), without their turns, of ``user_id`` and
    ``channel`` when given."""
    statement = select(ThreadRow)
    if user_id is not None:
        statement = statement.where(ThreadRow.user_id == user_id)
    if channel is not None:
        statement = statement.where(ThreadRow.channel == channel)
    threads = session.exec(statement.order_by(col(ThreadRow.updated_at).desc(), ThreadRow.thread_id).limit(limit)).all()
    turns = _turn_rows(session, [t.thread_id for t in threads])
    by_thread: dict[str, list[JobRow]] = {}
    for job in turns:
        by_thread.setdefault(job.thread_id, []).append(job)
    return [_session(t, by_thread.get(t.thread_id, []), False) for t in threads]


# ---- training exports ---------------------------------------------------------------------------------------


SHAREGPT_ROLES = {"system": "system", "user": "human", "assistant": "gpt"}
"""ShareGPT's speaker names (``from``) for OpenAI's chat roles."""


def _after(cursor: str) -> tuple[datetime, str]:
    """The (queue time, job id) a ``next_after`` cursor names; ``ValueError`` for anything :func:`_cursor` cannot have
    written (no time zone, a day outside ``EXPORT_DAYS``)."""
    queued_at, _, job_id = cursor.partition("|")
    try:
        after = datetime.fromisoformat(queued_at)
    except ValueError:
        after = None
    first, last = EXPORT_DAYS
    if after is None or after.tzinfo is None or not first <= after.date() <= last:
        raise ValueError("after must be the next_after of a previous page")
    return after, job_id


def _cursor(job: JobRow) -> str:
    return f"{job.queued_at.isoformat()}|{job.job_id}"


def export_page(session: Session, query: ExportQuery, budget_bytes: int | None = None) -> ExportReply:
    """One page of ``query``'s export (see :class:`hermes_proto.sessions.ExportQuery`). A turn is exported when
    it completed with a reply and passes the filters; ``openai`` and ``sharegpt`` write its prompt as sent
    (SOUL and memory markers included) and the reply. ``dpo`` writes one pair per thread whose draft 2 replaced
    draft 1 after the user answered questions and whose final draft the user rated 4 or 5: the prompt of draft 1,
    draft 2 chosen, draft 1 rejected (the user's answers and rating say draft 2 is what the idea wanted). Raises
    ``ValueError`` on a malformed date or cursor. ``budget_bytes``: the page stops before its lines pass it (one line
    at least), so a reply fits one NATS message."""
    since, until = export_day(query.since, "since"), export_day(query.until, "until")
    statement = (
        select(JobRow, ThreadRow)
        .join(ThreadRow, col(ThreadRow.thread_id) == JobRow.thread_id)
        .where(JobRow.status == "completed")
        .where(col(JobRow.text).is_not(None))
    )
    statement = (
        statement.where(JobRow.kind == "draft1")
        if query.format == "dpo"
        else statement.where(col(JobRow.kind).in_(TURN_KINDS))
    )
    if query.user_id is not None:
        statement = statement.where(ThreadRow.user_id == query.user_id)
    if query.channel is not None:
        statement = statement.where(ThreadRow.channel == query.channel)
    floor = max(query.min_rating or 0, 4 if query.format == "dpo" else 0)
    if floor:
        statement = statement.where(col(ThreadRow.rating) >= floor)
    if since is not None:
        statement = statement.where(col(JobRow.queued_at) >= datetime.combine(since, time.min, UTC))
    if until is not None:
        statement = statement.where(col(JobRow.queued_at) < datetime.combine(until + timedelta(days=1), time.min, UTC))
    if query.after is not None:
        after, job_id = _after(query.after)
        statement = statement.where(
            or_(col(JobRow.queued_at) > after, and_(col(JobRow.queued_at) == after, col(JobRow.job_id) > job_id))
        )
    rows = session.exec(statement.order_by(JobRow.queued_at, JobRow.job_id).limit(query.limit + 1)).all()
    lines: list[str] = []
    size = 0
    for taken, (job, thread) in enumerate(rows[: query.limit]):
        record = _record(session, query.format, job, thread)
        line = json.dumps(record, ensure_ascii=False) if record is not None else None
        if line is not None and lines and budget_bytes is not None and size + len(line.encode()) + 8 > budget_bytes:
            return ExportReply(lines=lines, next_after=_cursor(rows[taken - 1][0]))
        if line is not None:
            lines.append(line)
            size += len(line.encode()) + 8
    more = len(rows) > query.limit
    return ExportReply(lines=lines, next_after=_cursor(rows[query.limit - 1][0]) if more else None)


def _record(session: Session, fmt: str, job: JobRow, thread: ThreadRow) -> dict | None:
    messages = json.loads(job.messages_json)
    if fmt == "openai":
        return {"messages": [*messages, {"role": "assistant", "content": job.text}]}
    if fmt == "sharegpt":
        turns = [*messages, {"role": "assistant", "content": job.text}]
        return {
            "id": job.job_id,
            "conversations": [{"from": SHAREGPT_ROLES.get(m["role"], m["role"]), "value": m["content"]} for m in turns],
        }
    if thread.final_draft_number != 2 or thread.completion_reason != "answered":
        return None
    draft2 = session.exec(
        select(JobRow)
        .where(JobRow.thread_id == thread.thread_id)
        .where(JobRow.kind == "draft2")
        .where(JobRow.status == "completed")
    ).first()
    if draft2 is None or not draft2.text or draft2.text == job.text:
        return None
    return {
        "prompt": messages,
        "chosen": draft2.text,
        "rejected": job.text,
        "thread_id": thread.thread_id,
        "rating": thread.rating,
    }

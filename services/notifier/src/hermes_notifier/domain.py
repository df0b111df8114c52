"""What the notifier says and to whom: pure functions, no I/O.

Texts are plain (no Markdown/HTML), so they need no escaping. Lengths are counted in UTF-16 code units, the
unit Telegram counts in, so a part that fits here fits the Bot API's limit of 4096 (``sendMessage``: "Text of
the message to be sent, 1-4096 characters after entities parsing").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hermes_proto.base import Event
from hermes_proto.events import (
    BudgetThresholdReached,
    JobFailed,
    NotificationFailed,
    NotificationSent,
    ThreadCompleted,
    ThreadFailed,
)
from hermes_proto.ids import derived_id

CHANNEL = "telegram"
TELEGRAM_TEXT_LIMIT = 4096
IDEA_EXCERPT_CHARS = 80
ERROR_MESSAGE_CHARS = 500
NOTIFY_EVENTS: tuple[type[Event], ...] = (ThreadCompleted, JobFailed, ThreadFailed, BudgetThresholdReached)
BUDGET_KIND = "budget_threshold"
CENTS_SIGNIFICANT_DIGITS = 3  # enough to tell 0.0114¢ from 0.0115¢ without printing float noise
CENTS_MAX_DECIMALS = 6  # the router rounds spend to 6 decimals (micro-cents)

REASONS = {
    "answered": "built on your answers",
    "answer_timeout": "no answers came in time, so Hermes went on without them",
    "no_questions": "no questions were needed",
    "draft2_failed": "draft 2 could not be made, so this is draft 1",
}


@dataclass(frozen=True)
class ThreadContext:
    """What the log tells about a thread: the ``idea`` and ``origin`` of its ``thread_opened`` event (None /
    empty when absent) and the text and number of its last presented draft."""

    idea: str | None = None
    origin: Mapping[str, str] = field(default_factory=dict)
    draft_text: str | None = None
    draft_number: int | None = None


@dataclass(frozen=True)
class Notification:
    """One message to send: ``kind`` as :func:`kind_of` (``thread_completed``, ``budget_threshold``...)."""

    kind: str
    text: str


def kind_of(event: Event) -> str:
    """The notification kind of ``event`` (the ``kind`` of its record and metric label): its event type, except
    ``budget_threshold`` for a :class:`BudgetThresholdReached`."""
    return BUDGET_KIND if isinstance(event, BudgetThresholdReached) else event.type_name()


def about_thread(event: Event) -> bool:
    """Whether ``event`` belongs to a thread (it has an idea, an origin chat and a web page); a budget alert
    does not: it goes to the operator's default chat."""
    return event.aggregate_type == "thread"


def choose_recipient(origin: Mapping[str, str], default_chat: str | None) -> str | None:
    """The chat to answer in: the thread's own Telegram chat when it came from Telegram, else the default
    chat; None when neither is known (the notification is skipped)."""
    return origin.get("telegram_chat_id") or default_chat or None


def excerpt(text: str, limit: int) -> str:
    """``text`` on one line, cut to at most ``limit`` characters at a word boundary, with "…" when cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def thread_link(web_base_url: str, thread_id: str) -> str:
    """The web UI's address of one thread: ``<base>/?thread=<id>``."""
    return f"{web_base_url.rstrip('/')}/?thread={thread_id}"


def compose(event: Event, context: ThreadContext, web_base_url: str, draft_max_chars: int) -> Notification | None:
    """The message about ``event``, or None for an event type the notifier does not announce."""
    if isinstance(event, BudgetThresholdReached):
        return Notification(BUDGET_KIND, budget_text(event))
    idea = excerpt(context.idea, IDEA_EXCERPT_CHARS) if context.idea else f"thread {event.aggregate_id}"
    link = f"Open the thread: {thread_link(web_base_url, event.aggregate_id)}"
    match event:
        case ThreadCompleted():
            reason = REASONS.get(event.reason, event.reason)
            lines = [f"Hermes finished your idea: {idea}", "",
                     f"Final draft: {event.final_draft_number} ({reason})", link]
            draft = _draft_section(event, context, draft_max_chars)
            return Notification(event.type_name(), "\n".join(lines + draft))
        case JobFailed():
            lines = [f"Hermes: a job failed for your idea: {idea}", "",
                     f"Job {event.job_id} failed: {event.error_code}: {_error(event.message)}", link]
            return Notification(event.type_name(), "\n".join(lines))
        case ThreadFailed():
            lines = [f"Hermes could not finish your idea: {idea}", "",
                     f"Error {event.error_code}: {_error(event.message)}", link]
            return Notification(event.type_name(), "\n".join(lines))
    return None


def budget_text(event: BudgetThresholdReached) -> str:
    """One line, e.g. "Budget alert: daily spend 0.0114¢ reached 30% of the 0.03¢ budget (2026-11-23)"."""
    spend = {"daily": "daily spend", "project": f"project {event.name} spend"}.get(
        event.scope, f"{event.scope} {event.name} spend")
    return (f"Budget alert: {spend} {format_cents(event.spent_cents)} reached {format_fraction(event.threshold)} "
            f"of the {format_cents(event.budget_cents)} budget ({event.period})")


def format_cents(cents: float) -> str:
    """An amount in cents to read: 3 significant digits (never fewer than the integer part, at most 6
    decimals), thousands separated, trailing zeros dropped, plus dollars from 100 cents on:
    0.0114 -> "0.0114¢", 12.345 -> "12.3¢", 150 -> "150¢ ($1.50)", 123456.7 -> "123,457¢ ($1,234.57)"."""
    if not math.isfinite(cents) or cents == 0:
        return f"{cents:g}¢"
    magnitude = math.floor(math.log10(abs(cents)))
    decimals = min(max(0, CENTS_SIGNIFICANT_DIGITS - 1 - magnitude), CENTS_MAX_DECIMALS)
    text = f"{cents:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return f"{text}¢ (${cents / 100:,.2f})" if abs(round(cents, decimals)) >= 100 else f"{text}¢"


def format_fraction(fraction: float) -> str:
    """A fraction as a percentage to one decimal, trailing zeros dropped: 0.3 -> "30%", 0.125 -> "12.5%"."""
    return f"{round(fraction * 100, 1):g}%"


def _error(message: str) -> str:
    return excerpt(message, ERROR_MESSAGE_CHARS) if message.strip() else "(no details)"


def _draft_section(event: ThreadCompleted, context: ThreadContext, max_chars: int) -> list[str]:
    # Only the draft the thread completed on: an older one would mislead.
    if max_chars <= 0 or not context.draft_text or context.draft_number != event.final_draft_number:
        return []
    text = context.draft_text.strip()
    if len(text) > max_chars:
        text = text[:max_chars].rstrip() + "\n… (cut here; the whole draft is at the link above)"
    return ["", f"Draft {event.final_draft_number}:", "", text]


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (characters outside the BMP, e.g. most emoji, count twice)."""
    return len(text.encode("utf-16-le")) // 2


def _fitting_prefix(text: str, limit: int) -> int:
    """The number of leading characters of ``text`` whose UTF-16 length is at most ``limit``."""
    units = 0
    for index, char in enumerate(text):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > limit:
            return index
    return len(text)


def _cut_point(text: str, limit: int) -> tuple[int, int]:
    """Where to end the first part and where the next one starts: the last paragraph break that fits, else
    the last line break, else the last space, else a hard cut at the limit."""
    end = _fitting_prefix(text, limit)
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, end + len(separator))  # may start right at the limit
        if at > 0:
            return at, at + len(separator)
    return end, end


def split_text(text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` UTF-16 units, preferring paragraph, then line, then
    word boundaries; the separators at the cuts are dropped, nothing else is. Blank parts are left out."""
    if limit < 2:
        raise ValueError("limit must be at least 2 (one character outside the BMP)")
    parts: list[str] = []
    rest = text
    while utf16_len(rest) > limit:
        end, start = _cut_point(rest, limit)
        parts.append(rest[:end])
        rest = rest[start:]
    parts.append(rest)
    return [part for part in parts if part.strip()]


# A subject token: no dots or wildcards, so a thread id can be put into a subject to read its events.
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")


def addressable(thread_id: str) -> bool:
    """Whether ``thread_id`` is a single subject token (its events can be looked up in the log by subject)."""
    return _SUBJECT_TOKEN.fullmatch(thread_id) is not None


def is_stale(event: Event, now: datetime, max_age_s: float) -> bool:
    """Whether ``event`` happened more than ``max_age_s`` seconds before ``now`` (0 = never stale): a first
    start on an old log must not replay its history into the chat. A naive ``occurred_at`` counts as UTC."""
    occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
    return max_age_s > 0 and (now - occurred).total_seconds() > max_age_s


def covers(job_failed: JobFailed, thread_failed: ThreadFailed) -> bool:
    """Whether ``job_failed`` and ``thread_failed`` report one failure (the same cause, e.g. the orchestrator's
    answer to one ``execution_failed``): the job's message already told the user, a second would only repeat it."""
    return job_failed.causation_id is not None and job_failed.causation_id == thread_failed.causation_id


def sent_id(cause_event_id: str) -> str:
    """The event id of the :class:`NotificationSent` about one cause (deterministic, see ``derived_id``)."""
    return derived_id(cause_event_id, "notification_sent")


def notification_sent(cause: Event, kind: str, recipient: str, message_ids: Sequence[int],
                      now: datetime) -> NotificationSent:
    """The record of a delivered notification; ``external_id`` lists the Telegram message ids, comma-separated
    (one per part of a split text). Its ``aggregate_id`` is the cause's, also for a budget alert: the record is
    a thread event, so it lands on ``hermes.evt.thread.<budget aggregate id>.notification_sent``, where
    "already sent?" looks for it."""
    return NotificationSent(
        event_id=sent_id(cause.event_id), aggregate_id=cause.aggregate_id, occurred_at=now,
        correlation_id=cause.correlation_id, causation_id=cause.event_id, cause_event_id=cause.event_id,
        kind=kind, channel=CHANNEL, recipient=recipient, external_id=",".join(map(str, message_ids)) or None)


def notification_failed(cause: Event, kind: str, recipient: str, message: str, now: datetime) -> NotificationFailed:
    """The record of a notification given up after retries; ``message`` says why (no secrets in it)."""
    return NotificationFailed(
        event_id=derived_id(cause.event_id, "notification_failed"), aggregate_id=cause.aggregate_id,
        occurred_at=now, correlation_id=cause.correlation_id, causation_id=cause.event_id,
        cause_event_id=cause.event_id, kind=kind, channel=CHANNEL, recipient=recipient, message=message[:2000])

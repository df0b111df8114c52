"""What the notifier says and to whom: pure functions, no I/O.

Texts are plain (no Markdown/HTML), so they need no escaping. Lengths are counted in UTF-16 code units, the
unit Telegram counts in, so a part that fits here fits the Bot API's limit of 4096 (``sendMessage``: "Text of
the message to be sent, 1-4096 characters after entities parsing").
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from hermes_proto import threads
from hermes_proto.agents import AGENT_KIND, AgentRunCancelled, AgentRunCompleted, AgentRunFailed
from hermes_proto.base import Event
from hermes_proto.deadletter import DeadLetter
from hermes_proto.events import (
    Assumption,
    BackendMarkedUnhealthy,
    BudgetThresholdReached,
    JobFailed,
    NotificationFailed,
    NotificationSent,
    QueueFull,
    ThreadCompleted,
    ThreadFailed,
)
from hermes_proto.facts import category_of, label
from hermes_proto.ids import derived_id

CHANNEL = "telegram"
WEBHOOK = "webhook"
"""The channel of a result POSTed to an external producer's ``callback_url``."""
TELEGRAM_TEXT_LIMIT = 4096
IDEA_EXCERPT_CHARS = 80
ERROR_MESSAGE_CHARS = 500
ALERT_EVENTS: tuple[type[Event], ...] = (BackendMarkedUnhealthy, QueueFull)
CALLBACK_EVENTS: tuple[type[Event], ...] = (ThreadCompleted, ThreadFailed)
NOTIFY_EVENTS: tuple[type[Event], ...] = (
    ThreadCompleted,
    JobFailed,
    ThreadFailed,
    BudgetThresholdReached,
    *ALERT_EVENTS,
)
BUDGET_KIND = "budget_threshold"
TALOS_DOWN, BACKEND_DOWN, QUEUE_FULL = "talos_down", "backend_down", "queue_full"
JOB_FAILURE, BUDGET_THRESHOLD, DEAD_LETTERS, THREAD_FINISHED = (
    "job_failure",
    "budget_threshold",
    "dead_letters",
    "thread_finished",
)
ALERT_TYPES = (TALOS_DOWN, BACKEND_DOWN, QUEUE_FULL, JOB_FAILURE, BUDGET_THRESHOLD, DEAD_LETTERS, THREAD_FINISHED)
"""The alert types of ``HERMES_NOTIFY_ALERT_TYPES`` and ``HERMES_ALERT_COOLDOWNS``."""
ALERT_TYPE_OF_KIND: Mapping[str, str] = {
    ThreadCompleted.type_name(): THREAD_FINISHED,
    ThreadFailed.type_name(): THREAD_FINISHED,
    JobFailed.type_name(): JOB_FAILURE,
    BUDGET_KIND: BUDGET_THRESHOLD,
    TALOS_DOWN: TALOS_DOWN,
    BACKEND_DOWN: BACKEND_DOWN,
    QUEUE_FULL: QUEUE_FULL,
    DEAD_LETTERS: DEAD_LETTERS,
}
"""Notification kind (the ``kind`` of a record and metric label) -> alert type."""
DEFAULT_COOLDOWNS_S: Mapping[str, float] = {THREAD_FINISHED: 0.0}
"""Per-type cooldowns that differ from the general one unless configured: a thread finishes once, so its result
is never held back."""
DEAD_LETTER_CONSUMER = "notifier-dead-letters"
"""The notifier's durable on the dead-letter records; its own dead letters raise no alert (no alert loop)."""
DEAD_LETTER_AGGREGATE = "dead-letters"
"""The aggregate id of dead-letter alerts: their records land on ``hermes.evt.thread.dead-letters.*``."""
DEAD_LETTERS_PATH = "/api/system/dead-letters"
BACKENDS_PATH = "/api/backends"
DEAD_LETTER_DETAIL_CHARS = 300
CENTS_SIGNIFICANT_DIGITS = 3  # enough to tell 0.0114¢ from 0.0115¢ without printing float noise
CENTS_MAX_DECIMALS = 6  # the router rounds spend to 6 decimals (micro-cents)

CORRECTABLE_KEYS: Mapping[str, str] = {
    "depth": "depth",
    "style": "style",
    "budget": "constraint",
    "location": "constraint",
    "deadline": "constraint",
    "audience": "constraint",
    "language": "constraint",
}
"""The preference keys ``/correct`` names in its usage -> their category, as the learner keeps them (see
:data:`hermes_proto.events.PREFERENCE_CATEGORIES`): depth and style are categories of their own, the others the
recurring constraints. ``/correct`` takes any other slot too (:func:`correctable_category`)."""
_SLOT = re.compile(r"[a-z][a-z0-9_]{0,31}")


def correctable_category(key: str) -> str | None:
    """The category of the learned fact ``/correct <key>`` corrects (:func:`hermes_proto.facts.category_of`: depth,
    style, constraint or fact), or None when ``key`` cannot name a slot (lowercase letters, digits, ``_``; at most
    32 characters, the first a letter)."""
    return category_of(key) if _SLOT.fullmatch(key) else None


ASSUMPTIONS_SHOWN = 12  # a user has a handful; the cap only keeps a message short whatever the log holds

REASONS = {
    "answered": "built on your answers",
    "answer_timeout": "no answers came in time, so Hermes went on without them",
    "no_questions": "no questions were needed",
    "draft2_failed": "draft 2 could not be made, so this is draft 1",
}


@dataclass(frozen=True)
class ThreadContext:
    """What the log tells about a thread: the ``idea``, ``origin``, ``callback_url``, ``source_app``, ``kind`` and
    ``user_id`` of its ``thread_opened`` event (None / empty when absent), the text and number of its last
    presented draft and, for an agent run, how it ended."""

    idea: str | None = None
    origin: Mapping[str, str] = field(default_factory=dict)
    draft_text: str | None = None
    draft_number: int | None = None
    callback_url: str | None = None
    source_app: str | None = None
    assumptions: tuple[Assumption, ...] = ()
    """The learned preferences its draft 1 applied (``ThreadOpened.assumptions``)."""
    kind: str = "idea"
    """``ThreadOpened.kind``: ``agent`` for an agent run (whose end carries an answer, not a draft)."""
    run_end: AgentRunCompleted | AgentRunFailed | AgentRunCancelled | None = None
    """An agent run's last ending event (None: not an agent run, or not ended)."""
    user_id: str | None = None
    """``ThreadOpened.user_id``: who the thread (an agent run: whose approvals) belongs to."""

    @property
    def agent_run(self) -> bool:
        return self.kind == AGENT_KIND


@dataclass(frozen=True)
class Notification:
    """One message to send: ``kind`` as :func:`kind_of` (``thread_completed``, ``budget_threshold``...)."""

    kind: str
    text: str


@dataclass(frozen=True)
class AlertPolicy:
    """Which alerts are sent and how often.

    ``enabled``: the alert types of :data:`ALERT_TYPES` switched on; ``cooldown_s``: the quiet time (seconds)
    after an alert is sent, per alert type and aggregate (per backend for ``talos_down`` / ``backend_down``, per
    thread for ``job_failure`` / ``thread_finished``, the ``queue``, one budget and period, ``dead-letters``);
    ``cooldowns_s``: per-type overrides of it (seconds; :data:`DEFAULT_COOLDOWNS_S` unless configured);
    ``local_backend``: the backend whose ``backend_marked_unhealthy`` is a ``talos_down``."""

    enabled: frozenset[str] = frozenset(ALERT_TYPES)
    cooldown_s: float = 15 * 60.0
    cooldowns_s: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_COOLDOWNS_S))
    local_backend: str = "talos"

    def allows(self, kind: str) -> bool:
        """Whether a notification of ``kind`` may be sent: its alert type is enabled (a kind that is no alert,
        e.g. a question to a chat, always may)."""
        kind_type = alert_type(kind)
        return kind_type is None or kind_type in self.enabled

    def cooldown_for(self, kind: str) -> float:
        """The cooldown (seconds) of ``kind``'s alert type; 0 for a kind that is no alert."""
        kind_type = alert_type(kind)
        return 0.0 if kind_type is None else self.cooldowns_s.get(kind_type, self.cooldown_s)


@dataclass(frozen=True)
class AlertCause:
    """A cause of a notification that is not an event (a dead-letter record, a Telegram update or button press),
    with what its notification records and the age check read: ``event_id`` (derived, stable across redeliveries), ``aggregate_id``, ``correlation_id``
    and ``occurred_at`` (UTC)."""

    event_id: str
    aggregate_id: str
    correlation_id: str
    occurred_at: datetime


Cause = Event | AlertCause
"""What a notification is about: an event, or a dead-letter record as an :class:`AlertCause`."""


def alert_type(kind: str) -> str | None:
    """The alert type of a notification ``kind`` (see :data:`ALERT_TYPE_OF_KIND`): ``thread_completed`` and
    ``thread_failed`` -> ``thread_finished``, ``job_failed`` -> ``job_failure``, an operator or budget alert ->
    itself; None for a kind that is no alert."""
    return ALERT_TYPE_OF_KIND.get(kind)


def kind_of(event: Event, local_backend: str = AlertPolicy.local_backend) -> str:
    """The notification kind of ``event`` (the ``kind`` of its record and metric label): its event type, except
    ``budget_threshold`` for a :class:`BudgetThresholdReached`, ``talos_down`` / ``backend_down`` for a
    :class:`BackendMarkedUnhealthy` of ``local_backend`` / another backend, ``queue_full`` for a
    :class:`QueueFull`."""
    if isinstance(event, BudgetThresholdReached):
        return BUDGET_KIND
    if isinstance(event, BackendMarkedUnhealthy):
        return TALOS_DOWN if event.aggregate_id == local_backend else BACKEND_DOWN
    if isinstance(event, QueueFull):
        return QUEUE_FULL
    return event.type_name()


def alert_text(event: Event, web_base_url: str | None = None) -> str | None:
    """The operator's message about a backend going down (with a link to the backends' page of the API when
    ``web_base_url`` is given) or the queue filling up (None for other events)."""
    match event:
        case BackendMarkedUnhealthy():
            text = (
                f"Hermes alert: backend {event.aggregate_id} is down ({event.consecutive_failures} health "
                f"checks failed in a row; last: {excerpt(event.reason, ERROR_MESSAGE_CHARS)}). New jobs go to "
                "other backends or wait until it recovers."
            )
            return f"{text}\nBackends: {web_base_url.rstrip('/')}{BACKENDS_PATH}" if web_base_url else text
        case QueueFull():
            return (
                f"Hermes alert: the job queue is full ({event.queued} of {event.limit} open jobs). New "
                f"submissions are refused; callers are told to retry in {event.retry_after_s:g} s."
            )
    return None


def is_alert_of(record: NotificationSent, kind_type: str) -> bool:
    """Whether ``record`` is a Telegram alert of alert type ``kind_type`` (a callback record of the same kind
    is not: it says nothing about what the chat saw)."""
    return record.channel == CHANNEL and alert_type(record.kind) == kind_type


def latest_alert(records: Iterable[NotificationSent], kind_type: str) -> NotificationSent | None:
    """The last of ``records`` (in log order) that is a Telegram alert of alert type ``kind_type``, or None."""
    latest = None
    for record in records:
        if is_alert_of(record, kind_type):
            latest = record
    return latest


def in_cooldown(last_sent: NotificationSent | None, now: datetime, cooldown_s: float) -> bool:
    """Whether ``last_sent`` (the latest alert of the same type under the same aggregate, None: none) was sent
    less than ``cooldown_s`` seconds before ``now``. It comes from the log, so the cooldown outlives a restart."""
    if last_sent is None or cooldown_s <= 0:
        return False
    sent_at = last_sent.occurred_at if last_sent.occurred_at.tzinfo else last_sent.occurred_at.replace(tzinfo=UTC)
    return (now - sent_at).total_seconds() < cooldown_s


# ---- dead letters ---------------------------------------------------------------------------------------


def dead_letter_cause(record: DeadLetter, dlq_sequence: int) -> AlertCause:
    """The cause of the alert about the record at ``HERMES_DLQ`` sequence ``dlq_sequence``: a record has no
    id of its own, so its id is derived from that sequence (``derived_id("dlq", seq)``: the same on every
    redelivery); it happened when it was dead-lettered."""
    cause_id = derived_id("dlq", str(dlq_sequence))
    return AlertCause(
        event_id=cause_id,
        aggregate_id=DEAD_LETTER_AGGREGATE,
        correlation_id=cause_id,
        occurred_at=record.dead_lettered_at,
    )


def dead_letter_text(record: DeadLetter, stored: int | None, web_base_url: str) -> str:
    """The operator's message about a dead letter; ``stored``: dead-letter records in ``HERMES_DLQ`` (None:
    unknown, the count is left out)."""
    detail = excerpt(record.detail, DEAD_LETTER_DETAIL_CHARS) if record.detail.strip() else "no details"
    count = (
        ""
        if stored is None
        else (f"; {stored} dead letter{'' if stored == 1 else 's'} {'is' if stored == 1 else 'are'} stored")
    )
    return (
        f"Hermes alert: messages are being dead-lettered: consumer {record.consumer} could not process a "
        f"{record.subject} message ({record.reason}: {detail}){count}. "
        f"See {web_base_url.rstrip('/')}{DEAD_LETTERS_PATH}"
    )


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
    if " " in cut[limit // 2 :]:
        cut = cut[: cut.rindex(" ")]
    return cut.rstrip() + "…"


def thread_link(web_base_url: str, thread_id: str) -> str:
    """The web UI's address of one thread: ``<base>/#thread=<id>``."""
    return f"{web_base_url.rstrip('/')}/#thread={thread_id}"


def compose(event: Event, context: ThreadContext, web_base_url: str, draft_max_chars: int) -> Notification | None:
    """The message about ``event``, or None for an event type the notifier does not announce (an alert's kind
    depends on the configuration: see :func:`alert_text`)."""
    if isinstance(event, BudgetThresholdReached):
        return Notification(BUDGET_KIND, budget_text(event))
    if context.agent_run:
        return _compose_agent_run(event, context, web_base_url, draft_max_chars)
    idea = excerpt(context.idea, IDEA_EXCERPT_CHARS) if context.idea else f"thread {event.aggregate_id}"
    link = f"Open the thread: {thread_link(web_base_url, event.aggregate_id)}"
    match event:
        case ThreadCompleted():
            reason = REASONS.get(event.reason, event.reason)
            lines = [
                f"Hermes finished your idea: {idea}",
                "",
                f"Final draft: {event.final_draft_number} ({reason})",
                link,
            ]
            if event.reason == "no_questions" and context.assumptions and context.origin.get("telegram_chat_id"):
                # Nothing was asked, so this is where a Telegram user learns what draft 1 assumed.
                lines += ["", assumptions_text(context.assumptions)]
            draft = _draft_section(event, context, draft_max_chars)
            return Notification(event.type_name(), "\n".join(lines + draft))
        case JobFailed():
            lines = [
                f"Hermes: a job failed for your idea: {idea}",
                "",
                f"Job {event.job_id} failed: {event.error_code}: {_error(event.message)}",
                link,
            ]
            return Notification(event.type_name(), "\n".join(lines))
        case ThreadFailed():
            lines = [
                f"Hermes could not finish your idea: {idea}",
                "",
                f"Error {event.error_code}: {_error(event.message)}",
                link,
            ]
            return Notification(event.type_name(), "\n".join(lines))
    return None


RUN_ENDINGS_SAID = {
    "max_iterations": "it reached its limit of model turns",
    "timeout": "its time ran out",
    "budget": "it reached its cost or token budget",
    "model_failed": "the model could not answer",
    "cancelled": "it was cancelled",
}
PARTIAL_CHARS = 1500


def agent_link(web_base_url: str, run_id: str) -> str:
    """The web UI's page of one agent run: ``<base>/#agent/<id>`` (where its steps and approvals are shown)."""
    return f"{web_base_url.rstrip('/')}/#agent/{run_id}"


def _compose_agent_run(
    event: Event, context: ThreadContext, web_base_url: str, answer_max_chars: int
) -> Notification | None:
    """The end of an agent run (``context.agent_run``): its answer (``AgentRunCompleted.answer``, cut at
    ``answer_max_chars`` like a draft; 0: none) or why it stopped. A failed model turn (``job_failed``) is not
    announced: the run's own end says what happened."""
    task = excerpt(context.idea, IDEA_EXCERPT_CHARS) if context.idea else f"run {event.aggregate_id}"
    link = f"Open the run: {agent_link(web_base_url, event.aggregate_id)}"
    end = context.run_end
    match event:
        case ThreadCompleted():
            lines = [f"Agent run finished: {task}", ""]
            if isinstance(end, AgentRunCompleted):
                calls = f", {end.tool_calls} tool call{'' if end.tool_calls == 1 else 's'}"
                lines.append(f"Answer after {end.iterations} turn{'' if end.iterations == 1 else 's'}{calls}")
            lines.append(link)
            answer = end.answer.strip() if isinstance(end, AgentRunCompleted) else ""
            if answer and answer_max_chars > 0:
                if len(answer) > answer_max_chars:
                    answer = (
                        answer[:answer_max_chars].rstrip() + "\n… (cut here; the whole answer is at the link above)"
                    )
                lines += ["", answer]
            elif not answer:
                lines += ["", "(The run gave no answer text.)"]
            return Notification(event.type_name(), "\n".join(lines))
        case ThreadFailed():
            if isinstance(end, AgentRunCancelled) or event.error_code == "cancelled":
                by = end.by if isinstance(end, AgentRunCancelled) else None
                lines = [f"Agent run cancelled: {task}", ""]
                lines.append(f"Stopped by {by}." if by else "It was stopped.")
                return Notification(event.type_name(), "\n".join([*lines, link]))
            reason = end.reason if isinstance(end, AgentRunFailed) else event.error_code
            message = end.message if isinstance(end, AgentRunFailed) else event.message
            said = RUN_ENDINGS_SAID.get(reason, reason)
            lines = [
                f"Agent run stopped: {task}",
                "",
                f"Reason: {reason} ({said})",
                f"Details: {_error(message)}",
                link,
            ]
            partial = end.partial.strip() if isinstance(end, AgentRunFailed) else ""
            if partial and answer_max_chars > 0:
                lines += [
                    "",
                    "The model's last text:",
                    "",
                    excerpt_block(partial, min(PARTIAL_CHARS, answer_max_chars)),
                ]
            return Notification(event.type_name(), "\n".join(lines))
    return None


def excerpt_block(text: str, limit: int) -> str:
    """``text`` with its lines kept, cut to ``limit`` characters with "…" when cut."""
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def preference_label(key: str) -> str:
    """A preference key to read: ``depth`` -> "Depth", ``dietary_needs`` -> "Dietary needs"
    (:func:`hermes_proto.facts.label`)."""
    return label(category_of(key), key)


def percent(fraction: float) -> str:
    """A confidence in [0, 1] as a whole percentage: 0.8 -> "80%", 0.6667 -> "67%"."""
    return f"{round(min(max(fraction, 0.0), 1.0) * 100)}%"


def correctable(assumption: Assumption) -> bool:
    """Whether ``/correct`` can correct ``assumption``: a learned preference (not a learned pattern's recurring
    answer) whose key names its slot (:func:`correctable_category`)."""
    return assumption.source == "preference" and correctable_category(assumption.key) == assumption.category


def assumption_label(assumption: Assumption) -> str:
    """ "Depth" for a preference; "Intent (your usual answer)" for a pattern (its key is the question category)."""
    label = preference_label(assumption.key)
    return label if assumption.source == "preference" else f"{label} (your usual answer)"


def merged_assumptions(*groups: Iterable[Assumption]) -> list[Assumption]:
    """The assumptions of ``groups`` in order, each once (the first one seen of a preference or pattern)."""
    seen: dict[str, Assumption] = {}
    for group in groups:
        for a in group:
            seen.setdefault(a.preference_id or a.pattern_id or f"{a.category}/{a.key}", a)
    return list(seen.values())


def assumptions_text(assumptions: Sequence[Assumption]) -> str:
    """What Hermes assumed from learned preferences (and patterns) instead of asking, and how to correct it (plain
    text, empty for none): "I assumed: Depth: detailed (80%), Budget: under 500 euros (90%)." and "Wrong? /correct
    <key> <value> (key: depth, budget)" naming the correctable keys (:func:`correctable`), if any. At most
    :data:`ASSUMPTIONS_SHOWN` are listed; a value is at most 120 characters (the contract's limit)."""
    shown = list(assumptions)[:ASSUMPTIONS_SHOWN]
    if not shown:
        return ""
    items = ", ".join(f"{assumption_label(a)}: {excerpt(a.value, 120)} ({percent(a.confidence)})" for a in shown)
    more = f" and {len(assumptions) - len(shown)} more" if len(assumptions) > len(shown) else ""
    lines = [f"I assumed: {items}{more}."]
    keys = list(dict.fromkeys(a.key for a in shown if correctable(a)))
    if keys:
        lines.append(f"Wrong? /correct <key> <value> (key: {', '.join(keys)})")
    return "\n".join(lines)


def budget_text(event: BudgetThresholdReached) -> str:
    """One line, e.g. "Budget alert: daily spend 0.0114¢ reached 30% of the 0.03¢ budget (2026-11-23)"."""
    spend = {"daily": "daily spend", "project": f"project {event.name} spend"}.get(
        event.scope, f"{event.scope} {event.name} spend"
    )
    return (
        f"Budget alert: {spend} {format_cents(event.spent_cents)} reached {format_fraction(event.threshold)} "
        f"of the {format_cents(event.budget_cents)} budget ({event.period})"
    )


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


def utf16_prefix(text: str, limit: int) -> str:
    """The longest head of ``text`` of at most ``limit`` UTF-16 units."""
    return text[: _fitting_prefix(text, limit)]


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
    the last line break, else the last space, else a hard cut at the limit. A break in the first half of the
    part does not count (a heading's blank line would leave a part of one line), except a space: any word
    boundary beats cutting a word."""
    end = _fitting_prefix(text, limit)
    for separator in ("\n\n", "\n", " "):
        at = text.rfind(separator, 0, end + len(separator))  # may start right at the limit
        if at > 0 and (at >= end // 2 or separator == " "):
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


def is_stale(event: Cause, now: datetime, max_age_s: float) -> bool:
    """Whether ``event`` happened more than ``max_age_s`` seconds before ``now`` (0 = never stale): a first
    start on an old log must not replay its history into the chat. A naive ``occurred_at`` counts as UTC."""
    occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
    return max_age_s > 0 and (now - occurred).total_seconds() > max_age_s


def covers(job_failed: JobFailed, thread_failed: ThreadFailed) -> bool:
    """Whether ``job_failed`` and ``thread_failed`` report one failure (the same cause, e.g. the orchestrator's
    answer to one ``execution_failed``): the job's message already told the user, a second would only repeat it."""
    return job_failed.causation_id is not None and job_failed.causation_id == thread_failed.causation_id


def _outcome_id(cause_event_id: str, outcome: str, channel: str) -> str:
    # Telegram's ids predate the other channels and stay as they were, so old records still match.
    return derived_id(cause_event_id, outcome) if channel == CHANNEL else derived_id(cause_event_id, outcome, channel)


def sent_id(cause_event_id: str, channel: str = CHANNEL) -> str:
    """The event id of the :class:`NotificationSent` about one cause on one channel (deterministic, see
    ``derived_id``)."""
    return _outcome_id(cause_event_id, "notification_sent", channel)


def notification_sent(
    cause: Cause, kind: str, recipient: str, message_ids: Sequence[int], now: datetime, channel: str = CHANNEL
) -> NotificationSent:
    """The record of a delivered notification; ``external_id`` lists the Telegram message ids, comma-separated
    (one per part of a split text; None for a callback). Its ``aggregate_id`` is the cause's, also for a budget
    or operator alert: the record is a thread event, so it lands on
    ``hermes.evt.thread.<cause's aggregate id>.notification_sent`` (e.g. ``...thread.queue...`` for a
    ``queue_full``, ``...thread.dead-letters...`` for a dead letter), where "already sent?" and the alert
    cooldown look for it."""
    return NotificationSent(
        event_id=sent_id(cause.event_id, channel),
        aggregate_id=cause.aggregate_id,
        occurred_at=now,
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
        cause_event_id=cause.event_id,
        kind=kind,
        channel=channel,
        recipient=recipient,
        external_id=",".join(map(str, message_ids)) or None,
    )


def notification_failed(
    cause: Cause, kind: str, recipient: str, message: str, now: datetime, channel: str = CHANNEL
) -> NotificationFailed:
    """The record of a notification given up after retries; ``message`` says why (no secrets in it)."""
    return NotificationFailed(
        event_id=_outcome_id(cause.event_id, "notification_failed", channel),
        aggregate_id=cause.aggregate_id,
        occurred_at=now,
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
        cause_event_id=cause.event_id,
        kind=kind,
        channel=channel,
        recipient=recipient,
        message=message[:2000],
    )


# ---- callbacks to external producers ------------------------------------------------------------------


def callback_recipient(url: str) -> str:
    """What a callback record names as its recipient: the URL's host (and port) and path, without scheme,
    credentials, query or fragment (where a producer would put a token), e.g. ``example.org:8443/hooks/hermes``."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "invalid-url"
    host = f"[{host}]" if ":" in host else host
    return f"{host}{port}{parts.path}"


def callback_body(event: ThreadCompleted | ThreadFailed, context: ThreadContext, web_base_url: str) -> dict[str, Any]:
    """The JSON object POSTed to the producer: ``thread_id``, ``status`` (``completed`` or ``failed``),
    ``source_app``, ``event_id`` (the final event's id: the same on every retry, a key to drop repeats),
    ``occurred_at`` (ISO-8601 UTC), ``final_draft_number`` and ``final_draft`` (its text; None when the thread
    failed or the draft is not in the log), ``reason`` (why it completed: answered, answer_timeout,
    no_questions, ...), ``error`` (``{"code", "message"}`` when it failed, else None) and ``thread_url``."""
    completed = isinstance(event, ThreadCompleted)
    number = event.final_draft_number if completed else None
    draft = context.draft_text if completed and context.draft_number == number else None
    return {
        "thread_id": event.aggregate_id,
        "status": threads.COMPLETED if completed else threads.FAILED,
        "source_app": context.source_app,
        "event_id": event.event_id,
        "occurred_at": event.occurred_at.isoformat(),
        "final_draft_number": number,
        "final_draft": draft,
        "reason": event.reason if completed else None,
        "error": None if completed else {"code": event.error_code, "message": event.message},
        "thread_url": thread_link(web_base_url, event.aggregate_id),
    }

"""The Telegram conversation, pure: what an inbound message or button press asks for, and what Hermes says.

Inbound: :func:`parse_message` and :func:`parse_button` turn an update into an :class:`Intent`. Outbound texts are
plain and rendered to MarkdownV2 by :func:`render` (every character escaped with python-telegram-bot's
``escape_markdown``, the first line bold), so an idea or a draft full of ``*_[]()~>#+-=|{}.!`` arrives as written.

Answers to questions: each question is its own message with buttons for the suggested answers
(``callback_data`` ``a:<thread_id>:<question>:<suggestion>``, at most 64 bytes as the Bot API allows) and a footer
naming the question and thread, so a reply to that message in the user's own words answers it
(:func:`question_of_reply`). The last question also has a "done" button (``d:<thread_id>``); a completed thread's
message has rating buttons (``r:<thread_id>:<1-5>``).

Learned preferences: what a thread assumed instead of asking is shown with its questions
(:func:`~hermes_notifier.domain.assumptions_text`), and ``/correct <key> <value>`` (:data:`CORRECTABLE_KEYS`)
corrects one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import reduce

from telegram.helpers import escape_markdown

from hermes_proto.base import Event
from hermes_proto.events import AnswersRecorded, Question, ThreadCompleted, ThreadFailed
from hermes_proto.queries import BackendsReply, PreferenceView, ThreadView
from hermes_proto.text import TextRefused, clean_text
from hermes_proto.threads import AWAITING_ANSWERS, answerable, thread_status_after

from hermes_notifier.domain import (
    CORRECTABLE_KEYS,
    correctable_category,
    excerpt,
    format_cents,
    percent,
    preference_label,
    split_text,
    thread_link,
    utf16_len,
)

PARSE_MODE = "MarkdownV2"
CALLBACK_DATA_MAX_BYTES = 64  # Bot API InlineKeyboardButton.callback_data: 1-64 bytes
BUTTON_LABEL_CHARS = 40
THREADS_LISTED = 10
COMMANDS = ("idea", "status", "threads", "budget", "backends", "rate", "correct", "cancel", "done", "help", "start")
_THREAD_ID = r"[A-Za-z0-9_-]{1,64}"
_FOOTER = re.compile(rf"Question (\d+) of (\d+) · thread ({_THREAD_ID})\s*$")
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@(\w+))?(?:\s+(.*))?$", re.DOTALL)
PREFERENCE_VALUES = {"depth": ("overview", "detailed", "comprehensive"), "style": ("formal", "casual", "technical")}
"""The values the learner knows for depth and style (see :data:`hermes_proto.events.PREFERENCE_CATEGORIES`); a
constraint's value is the user's own words."""
PREFERENCE_VALUE_MAX_CHARS = 120  # hermes_proto.queries.CorrectPreference.value
CORRECT_USAGE = (
    "Send /correct <key> <value>, e.g. /correct depth overview or /correct budget under 300 euros. "
    f"Keys: {', '.join(CORRECTABLE_KEYS)}."
)


Keyboard = list[list[tuple[str, str]]]
"""Rows of inline buttons, each ``(label, callback_data)``."""


@dataclass(frozen=True)
class Intent:
    """What an update asks for. ``kind``: ``idea`` (``text`` is the idea), ``answer`` (``thread_id``,
    ``question`` index from 0, ``text``; ``suggestion`` set for a button), ``done`` (``thread_id``), ``rate``
    (``thread_id`` or None for the chat's latest, ``rating``), ``command`` (``name`` of :data:`COMMANDS`,
    ``text`` its argument), ``correct`` (``key`` of :data:`CORRECTABLE_KEYS`, ``text`` the right value, lowercase
    for depth and style), ``usage`` (``text`` says what was wrong), ``ignore``."""

    kind: str
    text: str = ""
    thread_id: str | None = None
    question: int | None = None
    suggestion: int | None = None
    rating: int | None = None
    name: str | None = None
    key: str | None = None


IGNORE = Intent("ignore")


def parse_message(text: str | None, reply_to_text: str | None, bot_username: str | None = None) -> Intent:
    """The intent of a text message. A reply to one of Hermes's question messages answers that question;
    ``/idea <text>`` or any other plain text submits an idea; ``/<command> [argument]`` is a command (a command
    addressed to another bot, ``/status@other_bot``, is ignored). The text is cleaned first as every typed text is
    (:func:`hermes_proto.text.clean_text`: NFKC, no control or bidirectional-override characters); a message with
    nothing visible left is ignored when it was only whitespace, else answered with usage."""
    try:
        body = clean_text(text or "", "message")
    except TextRefused as refused:
        return IGNORE if refused.reason == "empty" else Intent("usage", text="That message has no visible text.")
    match = _COMMAND.match(body)
    if match is None:
        question = question_of_reply(reply_to_text)
        if question is not None:
            return Intent("answer", text=body, thread_id=question[0], question=question[1])
        return Intent("idea", text=body)
    name, addressee, argument = match.group(1).lower(), match.group(2), (match.group(3) or "").strip()
    if addressee and bot_username and addressee.lower() != bot_username.lower():
        return IGNORE
    if name == "idea":
        return Intent("idea", text=argument) if argument else Intent("usage", text="Send /idea followed by your idea.")
    if name == "rate":
        return _rate(argument)
    if name == "correct":
        return _correct(argument)
    if name not in COMMANDS:
        return Intent("usage", text=f"I don't know /{name}.")
    return Intent("command", name=name, text=argument)


def _rate(argument: str) -> Intent:
    parts = argument.split()
    if not parts or not parts[0].isdigit() or not 1 <= int(parts[0]) <= 5:
        return Intent("usage", text="Send /rate followed by a number from 1 to 5.")
    return Intent("rate", rating=int(parts[0]), thread_id=parts[1] if len(parts) > 1 else None)


def _correct(argument: str) -> Intent:
    """``/correct <key> <value>``: a slot's key (:func:`~hermes_notifier.domain.correctable_category`: any case; the
    usage names :data:`CORRECTABLE_KEYS`), then the value (whitespace made
    single spaces; 1-120 characters; depth and style only one of :data:`PREFERENCE_VALUES`)."""
    parts = argument.split(maxsplit=1)
    if not parts:
        return Intent("usage", text=CORRECT_USAGE)
    key = parts[0].lower()
    if correctable_category(key) is None:
        return Intent("usage", text=f"There is no preference called {excerpt(parts[0], 32)}. {CORRECT_USAGE}")
    value = " ".join(parts[1].split()) if len(parts) > 1 else ""
    if not value:
        return Intent("usage", text=f"Say what {key} should be. {CORRECT_USAGE}")
    if len(value) > PREFERENCE_VALUE_MAX_CHARS:
        return Intent("usage", text=f"That {key} is too long: at most {PREFERENCE_VALUE_MAX_CHARS} characters.")
    choices = PREFERENCE_VALUES.get(key)
    if choices is not None:
        value = value.lower()
        if value not in choices:
            return Intent("usage", text=f"{preference_label(key)} is one of {', '.join(choices)}.")
    return Intent("correct", key=key, text=value)


def parse_button(data: str | None) -> Intent:
    """The intent of a button press (its ``callback_data``); anything not made by Hermes is ignored."""
    parts = (data or "").split(":")
    try:
        match parts:
            case ["a", thread_id, question, suggestion]:
                return Intent("answer", thread_id=thread_id, question=int(question), suggestion=int(suggestion))
            case ["d", thread_id]:
                return Intent("done", thread_id=thread_id)
            case ["r", thread_id, rating] if 1 <= int(rating) <= 5:
                return Intent("rate", thread_id=thread_id, rating=int(rating))
    except ValueError:
        return IGNORE
    return IGNORE


def question_of_reply(reply_to_text: str | None) -> tuple[str, int] | None:
    """``(thread_id, question index from 0)`` when ``reply_to_text`` is one of Hermes's question messages."""
    match = _FOOTER.search(reply_to_text or "")
    if match is None:
        return None
    return match.group(3), int(match.group(1)) - 1


ANSWERS_CLOSED_BY: tuple[type[Event], ...] = (AnswersRecorded, ThreadCompleted, ThreadFailed)
"""The events of a thread that may end its answer window (looked up in its log by :func:`answers_open`'s caller)."""


def answers_open(closing: Iterable[Event]) -> bool:
    """Whether a thread whose questions were shown still takes answers, given those of its events of
    :data:`ANSWERS_CLOSED_BY` that are in the log: its status, folded over them from ``awaiting_answers`` (the
    status in which questions are shown) by :func:`hermes_proto.threads.thread_status_after`, is still
    :func:`~hermes_proto.threads.answerable`."""
    return answerable(reduce(thread_status_after, closing, AWAITING_ANSWERS))


def answer_button(thread_id: str, question: int, suggestion: int) -> str:
    return _fitting(f"a:{thread_id}:{question}:{suggestion}")


def done_button(thread_id: str) -> str:
    return _fitting(f"d:{thread_id}")


def rate_button(thread_id: str, rating: int) -> str:
    return _fitting(f"r:{thread_id}:{rating}")


def _fitting(data: str) -> str:
    if len(data.encode()) > CALLBACK_DATA_MAX_BYTES:
        raise ValueError(f"callback data longer than {CALLBACK_DATA_MAX_BYTES} bytes: {data!r}")
    return data


def buttons_fit(thread_id: str) -> bool:
    """Whether the thread's buttons fit Telegram's ``callback_data`` limit (ids made by Hermes always do): the
    longest, an answer button with two-digit indexes, is measured."""
    return len(f"a:{thread_id}:99:99".encode()) <= CALLBACK_DATA_MAX_BYTES


# ---- rendering ------------------------------------------------------------------------------------------


def render(text: str, bold_first_line: bool = True) -> str:
    """``text`` as MarkdownV2: every reserved character escaped, the first line bold when asked."""
    head, newline, rest = text.partition("\n")
    if bold_first_line and head.strip():
        return f"*{escape_markdown(head, version=2)}*{newline}{escape_markdown(rest, version=2)}"
    return escape_markdown(text, version=2)


def question_message(thread_id: str, index: int, questions: Sequence[Question]) -> tuple[str, Keyboard]:
    """The text and buttons of question ``index`` (from 0) of ``questions``."""
    question = questions[index]
    lines = [f"{question.category.capitalize()} question", "", question.text, ""]
    if question.suggestions:
        lines.append("Tap a suggestion, or reply to this message with your own answer.")
    else:
        lines.append("Reply to this message with your answer.")
    lines += ["", f"Question {index + 1} of {len(questions)} · thread {thread_id}"]
    keyboard: Keyboard = []
    if buttons_fit(thread_id):
        keyboard = [
            [(excerpt(s, BUTTON_LABEL_CHARS), answer_button(thread_id, index, j))]
            for j, s in enumerate(question.suggestions[:8])
        ]
        if index == len(questions) - 1:
            keyboard.append([("Done: build draft 2 now", done_button(thread_id))])
    return "\n".join(lines), keyboard


def answered_text(question_text: str, answer: str, index: int, total: int, thread_id: str) -> str:
    """A question message after it was answered (the buttons go away)."""
    return "\n".join(
        [
            "Answered",
            "",
            question_text,
            "",
            f"Your answer: {answer}",
            "",
            f"Question {index + 1} of {total} · thread {thread_id}",
        ]
    )


def rating_keyboard(thread_id: str) -> Keyboard:
    if not buttons_fit(thread_id):
        return []
    return [[(f"{n}★", rate_button(thread_id, n)) for n in range(1, 6)]]


def idea_received_text(idea: str) -> str:
    return "\n".join(["Got it. Drafting…", "", excerpt(idea, 300)])


def live_draft_text(partial: str, limit: int) -> str:
    """Draft 1 while it streams: the text so far, its head kept (cut at a boundary) when it outgrows ``limit``
    UTF-16 units, the unit Telegram counts in."""
    body = partial.strip() or "…"
    if utf16_len(body) > limit:
        body = split_text(body, limit)[0].rstrip() + " …"
    return "\n".join(["Draft 1 (writing…)", "", body])


def draft_text(
    number: int, text: str, backend: str, model: str, tokens: int, latency_ms: float, questions_follow: bool
) -> str:
    """A presented draft with where it came from (backend, model, tokens, seconds)."""
    lines = [
        f"Draft {number}",
        "",
        text.strip() or "(empty)",
        "",
        f"{backend} · {model} · {tokens} tokens · {latency_ms / 1000:.1f} s",
    ]
    if questions_follow:
        lines.append("A few questions follow; your answers make draft 2 better.")
    return "\n".join(lines)


def help_text() -> str:
    return "\n".join(
        [
            "Hermes",
            "",
            "Send any message (or /idea <text>) and Hermes drafts it at once, asks a few questions, then refines.",
            "/status [thread] the latest thread (or one) in this chat",
            "/threads this chat's recent threads",
            "/done [thread] send the answers given so far and build draft 2",
            "/rate <1-5> [thread] rate the latest finished thread",
            f"/correct <key> <value> fix what Hermes assumed from before (keys: {', '.join(CORRECTABLE_KEYS)})",
            "/cancel [thread] stop what still runs",
            "/budget spend today against the budget",
            "/backends model backends and their health",
            "/help this list",
        ]
    )


def corrected_text(view: PreferenceView, wanted: str, threshold: float) -> str:
    """The outcome of ``/correct``: the value the learner now holds for the preference (``wanted``, or the old one
    when its history still outweighs one correction) and its confidence against ``threshold`` (the confidence
    from which Hermes assumes a preference instead of asking)."""
    label = preference_label(view.key)
    took = " ".join(view.value.split()).lower() == " ".join(wanted.split()).lower()
    lines = [f"Corrected: {label} is now {view.value}" if took else f"Noted: {label} stays {view.value} for now", ""]
    if view.applied:
        lines.append(f"Confidence {percent(view.confidence)}: Hermes assumes it from your next idea.")
    else:
        lines.append(
            f"Confidence {percent(view.confidence)}, below the {percent(threshold)} Hermes needs to assume "
            "it, so it asks about it again."
        )
    if not took:
        lines.append("Send the same correction again to change it.")
    return "\n".join(lines)


def correction_refused_text(reason: str) -> str:
    return f"Hermes could not take that correction\n\n{excerpt(reason, 300)}"


REFUSAL_TEXT = (
    "Sorry, this Hermes is private and does not take messages from this chat. Its owner can add "
    "the chat id to TELEGRAM_ALLOWED_CHAT_IDS."
)


def status_text(thread: ThreadView, web_base_url: str) -> str:
    """One thread's state: status, drafts, open questions, jobs with backend, tokens, cost and time."""
    lines = [f"Thread {thread.thread_id}: {thread.status.replace('_', ' ')}", "", excerpt(thread.idea, 200), ""]
    drafts = [n for n, text in ((1, thread.draft1), (2, thread.draft2)) if text]
    lines.append(
        f"Drafts: {', '.join(map(str, drafts)) if drafts else 'none yet'}"
        + (f" (final: {thread.final_draft_number})" if thread.final_draft_number else "")
    )
    open_questions = [q for q in thread.questions if q.answer is None]
    if thread.questions:
        lines.append(f"Questions: {len(thread.questions) - len(open_questions)} of {len(thread.questions)} answered")
    if thread.rating is not None:
        lines.append(f"Rating: {thread.rating}/5")
    for job in thread.jobs:
        where = f"{job.backend}/{job.model}" if job.backend else "not dispatched"
        took = f", {job.latency_ms / 1000:.1f} s" if job.latency_ms is not None else ""
        lines.append(
            f"• {job.kind}: {job.status} on {where}, {job.prompt_tokens + job.completion_tokens} tokens, "
            f"{format_cents(job.cost_cents)}{took}"
        )
    lines += ["", thread_link(web_base_url, thread.thread_id)]
    return "\n".join(lines)


def threads_text(threads: Sequence[ThreadView]) -> str:
    if not threads:
        return "No threads in this chat yet\n\nSend an idea to start one."
    lines = [f"Your last {len(threads)} threads", ""]
    lines += [f"• {t.status.replace('_', ' ')}: {excerpt(t.idea, 60)} ({t.thread_id})" for t in threads]
    return "\n".join(lines)


def budget_text(reply: BackendsReply) -> str:
    budget = reply.budget
    limit = format_cents(budget.daily_budget_cents) if budget.daily_budget_cents is not None else "no limit"
    lines = [f"Spend today ({budget.day})", "", f"{format_cents(budget.spent_today_cents)} of {limit}"]
    for project, spent in sorted(budget.projects.items()):
        cap = budget.project_budgets_cents.get(project)
        lines.append(f"• {project}: {format_cents(spent)}" + (f" of {format_cents(cap)}" if cap is not None else ""))
    return "\n".join(lines)


def backends_text(reply: BackendsReply) -> str:
    lines = ["Backends", ""]
    for b in reply.backends:
        state = b.health if b.enabled else "disabled"
        model = b.models[0] if b.models else "no model"
        lines.append(
            f"• {b.name} ({b.type}): {state}, {model}, {b.in_flight} running, {format_cents(b.spend_today_cents)} today"
        )
    lines.append(f"Queued jobs: {reply.queued_jobs}")
    return "\n".join(lines)


def open_jobs(thread: ThreadView) -> list[str]:
    """Ids of the thread's jobs that have not ended (their ``cancellable``: what /cancel stops)."""
    return [job.job_id for job in thread.jobs if job.cancellable]

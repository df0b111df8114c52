"""The Telegram conversation, pure: what an inbound message or button press asks for, and what Hermes says.

Inbound: :func:`parse_message` and :func:`parse_button` turn an update into an :class:`Intent`. Outbound texts are
plain and rendered to MarkdownV2 by :func:`render` (every character escaped with python-telegram-bot's
``escape_markdown``, the first line bold), so an idea or a draft full of ``*_[]()~>#+-=|{}.!`` arrives as written.

Answers to questions: each question is its own message with buttons for the suggested answers
(``callback_data`` ``a:<thread_id>:<question>:<suggestion>``, at most 64 bytes as the Bot API allows) and a footer
naming the question and thread, so a reply to that message in the user's own words answers it
(:func:`question_of_reply`). The last question also has a "done" button (``d:<thread_id>``); a completed thread's
message has rating buttons (``r:<thread_id>:<1-5>``).

Agent runs: ``/do <task>`` starts one. A tool call waiting for approval is a message with the tool, the reason and
the arguments (a JSON ``pre`` block, cut at :data:`ARGUMENTS_MAX_CHARS`), buttons ``ap:<approval_id>:<o|r|x>``
(approve once, approve for the run, reject) and the last line ``Agent run <run_id>`` (:func:`run_of_message`), which
names the run a press answers.

Learned preferences: what a thread assumed instead of asking is shown with its questions
(:func:`~hermes_notifier.domain.assumptions_text`), and ``/correct <key> <value>`` (:data:`CORRECTABLE_KEYS`)
corrects one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from functools import reduce
from typing import Any

from telegram.helpers import escape_markdown

from hermes_proto.agents import AGENT_KIND, APPROVE_FOR_RUN, APPROVE_ONCE, ApprovalRequested
from hermes_proto.base import Event
from hermes_proto.events import AnswersRecorded, Question, ThreadCompleted, ThreadFailed
from hermes_proto.queries import BackendsReply, PreferenceView, ThreadView
from hermes_proto.text import TextRefused, clean_text
from hermes_proto.threads import AWAITING_ANSWERS, answerable, thread_status_after

from hermes_notifier.domain import (
    CORRECTABLE_KEYS,
    agent_link,
    correctable_category,
    excerpt,
    format_cents,
    percent,
    preference_label,
    split_text,
    thread_link,
    utf16_len,
    utf16_prefix,
)

PARSE_MODE = "MarkdownV2"
CALLBACK_DATA_MAX_BYTES = 64  # Bot API InlineKeyboardButton.callback_data: 1-64 bytes
BUTTON_LABEL_CHARS = 40
THREADS_LISTED = 10
COMMANDS = (
    "idea",
    "do",
    "status",
    "threads",
    "budget",
    "backends",
    "rate",
    "correct",
    "cancel",
    "schedule",
    "done",
    "help",
    "start",
)
_THREAD_ID = r"[A-Za-z0-9_-]{1,64}"
_FOOTER = re.compile(rf"Question (\d+) of (\d+) · thread ({_THREAD_ID})\s*$")
_COMMAND = re.compile(r"^/([A-Za-z0-9_]{1,32})(?:@(\w+))?(?:\s+(.*))?$", re.DOTALL)
PREFERENCE_VALUES = {"depth": ("overview", "detailed", "comprehensive"), "style": ("formal", "casual", "technical")}
"""The values the learner knows for depth and style (see :data:`hermes_proto.events.PREFERENCE_CATEGORIES`); a
constraint's value is the user's own words."""
PREFERENCE_VALUE_MAX_CHARS = 120  # hermes_proto.queries.CorrectPreference.value
DO_USAGE = "Send /do followed by a task for an agent, e.g. /do summarise my notes on the garden project."
APPROVAL_CHOICES: Mapping[str, tuple[str, str]] = {
    "o": ("approve", APPROVE_ONCE),
    "r": ("approve", APPROVE_FOR_RUN),
    "x": ("reject", APPROVE_ONCE),
}
"""The last field of an approval button's ``callback_data`` (``ap:<approval_id>:<choice>``) -> the
``DecideApproval`` ``decision`` and ``scope`` it sends."""
_APPROVAL_ID = re.compile(r"[A-Za-z0-9_-]{1,58}")  # "ap:" + id + ":o" within 64 bytes
_RUN_FOOTER = re.compile(r"Agent run ([A-Za-z0-9_-]{1,128})\s*$")
ARGUMENTS_MAX_CHARS = 1500
"""The most of a tool call's arguments (JSON, UTF-16 units) an approval message shows; the rest is in the web UI.
With the rest of the message far below Telegram's 4096."""
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
        for depth and style), ``agent`` (``text`` the task of a new agent run), ``approval`` (``approval_id``, ``choice``
    one of :data:`APPROVAL_CHOICES`; the run is named by the message the button is on), ``usage`` (``text`` says what
    was wrong), ``ignore``."""

    kind: str
    text: str = ""
    thread_id: str | None = None
    question: int | None = None
    suggestion: int | None = None
    rating: int | None = None
    name: str | None = None
    key: str | None = None
    approval_id: str | None = None
    choice: str | None = None


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
    if name == "do":
        return Intent("agent", text=argument) if argument else Intent("usage", text=DO_USAGE)
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
            case ["ap", approval_id, choice] if choice in APPROVAL_CHOICES and _APPROVAL_ID.fullmatch(approval_id):
                return Intent("approval", approval_id=approval_id, choice=choice)
    except ValueError:
        return IGNORE
    return IGNORE


def run_of_message(text: str | None) -> str | None:
    """The agent run an approval message is about (its last line, ``Agent run <run_id>``), or None."""
    match = _RUN_FOOTER.search(text or "")
    return match.group(1) if match else None


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


def approval_button(approval_id: str, choice: str) -> str:
    return _fitting(f"ap:{approval_id}:{choice}")


def approval_keyboard(approval_id: str) -> Keyboard:
    """ "Approve once" and "Approve for run" on a row, "Reject" under them; none when the id is not one Hermes
    makes (it would not fit ``callback_data``): the message then points to the web UI only."""
    if not _APPROVAL_ID.fullmatch(approval_id):
        return []
    return [
        [("Approve once", approval_button(approval_id, "o")), ("Approve for run", approval_button(approval_id, "r"))],
        [("Reject", approval_button(approval_id, "x"))],
    ]


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
            "/do <task> an agent works on the task with tools; a risky tool call asks you first",
            "/status [thread] the latest thread (or one) in this chat",
            "/threads this chat's recent threads",
            "/done [thread] send the answers given so far and build draft 2",
            "/rate <1-5> [thread] rate the latest finished thread",
            f"/correct <key> <value> fix what Hermes assumed from before (keys: {', '.join(CORRECTABLE_KEYS)})",
            "/cancel [thread] stop what still runs (an agent run too)",
            "/schedule [<cron> <idea>] your schedules, or a new one that reports here (/schedule help for more)",
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
    """One thread's state: status, drafts, open questions, jobs with backend, tokens, cost and time (an agent
    run: its status, turns and link)."""
    if thread.kind == AGENT_KIND:
        return agent_status_text(thread, web_base_url)
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


def agent_status_text(thread: ThreadView, web_base_url: str) -> str:
    lines = [f"Agent run {thread.thread_id}: {thread.status.replace('_', ' ')}", "", excerpt(thread.idea, 200), ""]
    tokens = sum(job.prompt_tokens + job.completion_tokens for job in thread.jobs)
    cost = sum(job.cost_cents for job in thread.jobs)
    lines.append(f"Model turns: {len(thread.jobs)}, {tokens} tokens, {format_cents(cost)}")
    lines += ["", agent_link(web_base_url, thread.thread_id)]
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


def cancellable_run(thread: ThreadView) -> bool:
    """Whether ``thread`` is an agent run that has not ended (what ``/cancel`` stops with ``CancelAgentRun``)."""
    return thread.kind == AGENT_KIND and thread.open


def open_jobs(thread: ThreadView) -> list[str]:
    """Ids of the thread's jobs that have not ended (their ``cancellable``: what /cancel stops)."""
    return [job.job_id for job in thread.jobs if job.cancellable]


# ---- agent runs ---------------------------------------------------------------------------------------------------


def agent_started_text(task: str, run_id: str, web_base_url: str) -> str:
    return "\n".join(
        [
            "Agent run started (profile picked from the task)…",
            "",
            excerpt(task, 300),
            "",
            "A tool call that needs your approval shows up here with buttons. /cancel stops the run.",
            f"Run {run_id}: {agent_link(web_base_url, run_id)}",
        ]
    )


_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"})


def _visible(char: str) -> str:
    # Bidirectional overrides, zero-width and other invisible characters could make the arguments read as
    # something they are not: shown as their JSON escape instead (still the same JSON).
    if char == "\n" or unicodedata.category(char) not in _UNSAFE_CATEGORIES:
        return char
    return json.dumps(char)[1:-1]


def arguments_json(arguments: Mapping[str, Any], limit: int = ARGUMENTS_MAX_CHARS) -> str:
    """A tool call's arguments as indented JSON, invisible characters escaped, cut to ``limit`` UTF-16 units with
    a note saying how much there was."""
    text = json.dumps(arguments, indent=2, ensure_ascii=False, default=str)
    text = "".join(_visible(c) for c in text)
    if utf16_len(text) <= limit:
        return text
    return f"{utf16_prefix(text, limit).rstrip()}\n… (cut: {len(text)} characters in all)"


def approval_message(
    request: ApprovalRequested, task: str | None, run_id: str, web_base_url: str, closed: str | None = None
) -> str:
    """An approval request as MarkdownV2 (already rendered: the arguments are a ``pre`` block, where only `` ` ``
    and ``\\`` are escaped): the tool, the run's task, the reason, when it expires, the arguments, and the line
    ``Agent run <run_id>`` that tells a button press which run it answers. ``closed``: the first line once it is
    answered (its buttons go away; no deadline, no "answer here" any more)."""
    tool = excerpt(request.name, 64)
    lines = [closed or f"Approval needed: {tool}", ""]
    if closed:
        lines.append(f"Tool: {tool}")
    lines.append(f"Task: {excerpt(task, 120)}" if task else f"Run: {run_id}")
    lines.append(f"Reason: {excerpt(request.reason, 300) if request.reason.strip() else 'the rules ask for it'}")
    if not closed:
        expires = request.expires_at.astimezone(UTC) if request.expires_at.tzinfo else request.expires_at
        lines.append(f"Answer by {expires:%H:%M} UTC, or it is not run.")
    lines += ["", "Arguments:"]
    footer = []
    if not closed:
        footer.append(f"Or answer in the web UI: {agent_link(web_base_url, run_id)}")
    footer.append(f"Agent run {run_id}")
    pre = escape_markdown(arguments_json(request.arguments), version=2, entity_type="pre")
    head, tail = render("\n".join(lines)), escape_markdown("\n".join(footer), version=2)
    return f"{head}\n```json\n{pre}\n```\n{tail}"


def approval_closed_line(status: str, tool: str, by: str | None = None) -> str:
    """The first line of an answered approval: ``status`` one of ``once``, ``run`` (approved), ``rejected``,
    ``expired``, ``ended`` (the run ended first), ``sent:<choice>`` (a button was pressed here, the answer is on its
    way)."""
    who = f" (by {by})" if by else ""
    tool = excerpt(tool, 64)
    if status.startswith("sent:"):
        decision, scope = APPROVAL_CHOICES.get(status[5:], ("reject", APPROVE_ONCE))
        said = "reject" if decision == "reject" else "approve once" if scope == APPROVE_ONCE else "approve for this run"
        return f"Sent: {said} {tool}"
    return {
        APPROVE_ONCE: f"Approved once: {tool}{who}",
        APPROVE_FOR_RUN: f"Approved for this run: {tool}{who}",
        "rejected": f"Rejected: {tool}{who}",
        "expired": f"Expired: {tool} (nobody answered in time, so it did not run)",
    }.get(status, f"Closed: {tool} (the run has ended)")

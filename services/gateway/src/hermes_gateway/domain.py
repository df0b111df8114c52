"""Pure input rules of the gateway: what an idea and a set of answers must look like to be published.

No I/O and no HTTP here: a broken rule raises :class:`Rejected` with a machine-readable ``code``;
:mod:`hermes_gateway.envelope` maps codes to HTTP statuses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from hermes_proto.commands import CALLBACK_URL_MAX_LENGTH, SOURCE_APP_PATTERN
from hermes_proto.events import Answer
from hermes_proto.outbound import OutboundRefused
from hermes_proto.queries import MAX_SEQUENCE, ThreadView
from hermes_proto.text import TextRefused, clean_text, invisible, normalize_text

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
"""Ids end up inside NATS subjects, so dots and wildcards (``*``, ``>``) are never accepted."""


class Rejected(ValueError):
    """Input that breaks a rule. ``code``: empty_idea, invisible_idea, idea_too_long, answer_too_long, no_answers,
    duplicate_question, not_awaiting_answers, unknown_question, invalid_id, not_completed,
    invalid_callback_url, invalid_source_app, invalid_last_event_id."""

    def __init__(self, code: str, message: str, *, details: object = None, user_action: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.user_action = user_action


def check_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id (1-128 of ``[A-Za-z0-9_-]``); raises ``Rejected(invalid_id)``."""
    if not ID_PATTERN.match(value):
        raise Rejected("invalid_id", f"{what} must be 1-128 letters, digits, '-' or '_'", details={"field": what})
    return value


def check_last_event_id(value: str | None) -> int:
    """The ``HERMES_EVENTS`` sequence an SSE ``Last-Event-ID`` header names (0 without one): 1-19 decimal digits
    worth at most :data:`~hermes_proto.queries.MAX_SEQUENCE`; else ``Rejected(invalid_last_event_id)``."""
    if value is None or not value.strip():
        return 0
    text = value.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= MAX_SEQUENCE):
        raise Rejected(
            "invalid_last_event_id",
            f"Last-Event-ID must be an event sequence from 0 to {MAX_SEQUENCE}.",
            details={"header": "Last-Event-ID"},
            user_action="Send the id of the last event received, or no Last-Event-ID to start over.",
        )
    return int(text)


def clean_idea(idea: str, max_length: int) -> str:
    """The idea as :func:`hermes_proto.text.clean_text` makes it (NFKC, no control or bidirectional-override
    characters, trimmed). Raises ``Rejected``: ``empty_idea`` when nothing but whitespace was sent,
    ``invisible_idea`` when nothing visible is left (zero-width or format characters only), ``idea_too_long`` when
    it is longer than ``max_length`` characters once cleaned."""
    try:
        text = clean_text(idea, "idea")
    except TextRefused as refused:
        if refused.reason == "empty":
            raise Rejected(
                "empty_idea", "The idea is empty.", user_action="Describe your idea in a few words."
            ) from None
        raise Rejected(
            "invisible_idea",
            "The idea holds only invisible characters (zero-width, format or control characters).",
            user_action="Describe your idea in a few words.",
        ) from None
    if len(text) > max_length:
        raise Rejected(
            "idea_too_long",
            f"The idea is {len(text)} characters long; the limit is {max_length}.",
            details={"length": len(text), "max_length": max_length},
            user_action="Shorten the idea.",
        )
    return text


def clean_answers(raw: Sequence[tuple[str, str]] | Mapping[str, str], max_length: int) -> list[Answer]:
    """Answers as ``(question_id, text)`` pairs (or a ``{question_id: text}`` map), cleaned as ideas are
    (:func:`hermes_proto.text.normalize_text`), empty or invisible ones dropped, in the given order. Raises ``Rejected``: ``duplicate_question`` when an id repeats,
    ``answer_too_long`` past ``max_length`` characters, ``no_answers`` when none is left."""
    pairs = list(raw.items()) if isinstance(raw, Mapping) else list(raw)
    seen: set[str] = set()
    answers: list[Answer] = []
    for question_id, text in pairs:
        if question_id in seen:
            raise Rejected(
                "duplicate_question", f"Question {question_id} is answered twice.", details={"question_id": question_id}
            )
        seen.add(question_id)
        text = normalize_text(text)
        if len(text) > max_length:
            raise Rejected(
                "answer_too_long",
                f"The answer to {question_id} is longer than {max_length} characters.",
                details={"question_id": question_id, "length": len(text), "max_length": max_length},
                user_action="Shorten the answer.",
            )
        if any(not invisible(c) for c in text):
            answers.append(Answer(question_id=question_id, text=text))
    if not answers:
        raise Rejected("no_answers", "Every answer is empty.", user_action="Answer at least one question.")
    return answers


def check_answerable(thread: ThreadView, answers: Sequence[Answer]) -> None:
    """The thread must take answers now (its ``answerable``, :func:`hermes_proto.threads.answerable`; else
    ``Rejected(not_awaiting_answers)``) and every answer must name one of its questions
    (``Rejected(unknown_question)``)."""
    if not thread.answerable:
        raise Rejected(
            "not_awaiting_answers",
            f"Thread {thread.thread_id} is {thread.status}, not awaiting answers.",
            details={"thread_id": thread.thread_id, "status": thread.status},
            user_action="Wait for the questions, or submit a new idea.",
        )
    known = {q.question_id for q in thread.questions}
    unknown = [a.question_id for a in answers if a.question_id not in known]
    if unknown:
        raise Rejected(
            "unknown_question",
            "The thread has no question with id " + ", ".join(unknown) + ".",
            details={"unknown": unknown, "known": sorted(known)},
        )


def check_ratable(thread: ThreadView) -> None:
    """Only a completed thread has a final draft to rate (its ``ratable``, :func:`hermes_proto.threads.ratable`;
    else ``Rejected(not_completed)``)."""
    if not thread.ratable:
        raise Rejected(
            "not_completed",
            f"Thread {thread.thread_id} is {thread.status}; only a completed thread can be rated.",
            details={"thread_id": thread.thread_id, "status": thread.status},
            user_action="Rate it once its final draft is presented.",
        )


def check_callback_url(url: str) -> str:
    """``url`` without surrounding whitespace, if it is an absolute http or https URL with a host, a valid port,
    no credentials (``user:password@``, which would be stored in the log), no whitespace or control characters
    and at most 2048 characters; else ``Rejected(invalid_callback_url)``."""
    text = url.strip()
    problem = _callback_url_problem(text)
    if problem is not None:
        raise Rejected(
            "invalid_callback_url",
            f"callback_url {problem}.",
            details={"field": "callback_url"},
            user_action="Send an absolute http:// or https:// URL that accepts a JSON POST.",
        )
    return text


def refused_callback_url(refused: OutboundRefused) -> Rejected:
    """``Rejected(invalid_callback_url)`` for a callback whose host is, or resolves to, an address that is not
    public (``details.reason``: loopback, private, link_local...; see :mod:`hermes_proto.outbound`)."""
    return Rejected(
        "invalid_callback_url",
        f"callback_url {refused}.",
        details={"field": "callback_url", "reason": refused.reason},
        user_action="Send the URL of a public receiver; an internal one must be listed in HERMES_OUTBOUND_ALLOW.",
    )


def _callback_url_problem(text: str) -> str | None:
    if not text:
        return "is empty"
    if len(text) > CALLBACK_URL_MAX_LENGTH:
        return f"is longer than {CALLBACK_URL_MAX_LENGTH} characters"
    if any(char.isspace() or not char.isprintable() for char in text):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return "must use http or https"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (user:password@)"
    return None


def check_source_app(name: str) -> str:
    """``name`` if it is a short token (1-64 of ``[A-Za-z0-9_.-]``); else ``Rejected(invalid_source_app)``."""
    if not re.fullmatch(SOURCE_APP_PATTERN, name):
        raise Rejected(
            "invalid_source_app",
            "source_app must be 1-64 letters, digits, '.', '-' or '_'.",
            details={"field": "source_app"},
        )
    return name

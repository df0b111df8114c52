"""Events of the Hermes log (stream ``HERMES_EVENTS``, subjects ``hermes.evt.<aggregate>.<id>.<type>``).

Thread events carry the thread id as ``aggregate_id``; jobs live inside their
thread, so one thread's whole story replays from ``hermes.evt.thread.<id>.>``.
Token counts are model tokens; latencies are milliseconds.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import msgspec

from hermes_proto.base import ChatMessage, Event

QUESTION_CATEGORIES = ("intent", "constraint", "success", "context", "scope")
JOB_KINDS = ("draft1", "draft2")


class Question(msgspec.Struct, frozen=True, kw_only=True):
    """A clarifying question: ``category`` is one of :data:`QUESTION_CATEGORIES`."""

    question_id: str
    template_id: str
    category: str
    text: str
    suggestions: list[str] = []
    expected_value: float = 0.0


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    question_id: str
    text: str


class BackendCandidate(msgspec.Struct, frozen=True, kw_only=True):
    """A backend the router considered: ``score`` in [0, 1]; ``rejected`` says why it lost, or None."""

    backend: str
    model: str
    score: float
    rejected: str | None = None


class ThreadOpened(Event, frozen=True, kw_only=True):
    """A user submitted an idea. ``channel``: web, cli, api, telegram, external.
    ``origin`` holds reply addresses (e.g. ``{"telegram_chat_id": "42"}``)."""

    idea: str
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    max_questions: int = 5
    answer_timeout_s: float = 600.0


class JobQueued(Event, frozen=True, kw_only=True):
    """A model call is wanted. ``kind``: draft1 or draft2; ``max_tokens`` bounds the output (tokens)."""

    job_id: str
    kind: str
    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.7
    priority: int = 5


class BackendSelected(Event, frozen=True, kw_only=True):
    """The router chose ``backend``/``model`` for ``job_id``; ``candidates`` lists every one considered."""

    job_id: str
    backend: str
    model: str
    reason: str
    criteria: str = "quality_first"
    candidates: list[BackendCandidate] = []


class ExecutionStarted(Event, frozen=True, kw_only=True):
    job_id: str
    backend: str
    model: str
    attempt: int = 1


class ExecutionCompleted(Event, frozen=True, kw_only=True):
    """The edge's result: generated ``text``, tokens used, ``latency_ms`` (request to last byte),
    ``first_token_ms`` (request to first streamed token, when streamed)."""

    job_id: str
    backend: str
    model: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    first_token_ms: float | None = None
    finish_reason: str | None = None


class ExecutionFailed(Event, frozen=True, kw_only=True):
    """The edge could not get a result. ``retryable`` is False for errors retrying cannot fix (e.g. 401)."""

    job_id: str
    backend: str
    model: str
    error_code: str
    message: str
    retryable: bool = True
    latency_ms: float = 0.0


class DraftPresented(Event, frozen=True, kw_only=True):
    """Draft ``draft_number`` (1 or 2) is ready for the user."""

    job_id: str
    draft_number: int
    text: str
    backend: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0


class QuestionsProposed(Event, frozen=True, kw_only=True):
    """The learner's choice of clarifying questions for a thread after draft 1.

    ``idea_type`` is the classified type; ``clarity`` in [0, 1] is the estimated clarity of the idea."""

    questions: list[Question]
    idea_type: str
    clarity: float
    reason: str = ""


class AnswersRecorded(Event, frozen=True, kw_only=True):
    answers: list[Answer]


class ThreadCompleted(Event, frozen=True, kw_only=True):
    """The thread is finished. ``reason``: answered, answer_timeout, no_questions."""

    final_draft_number: int
    reason: str


class ThreadRated(Event, frozen=True, kw_only=True):
    """The user rated the thread's final draft (``draft_number``): ``rating`` 1 (useless) to 5 (just right),
    the design brief's 1-5 scale. A later rating of the same thread replaces the earlier one."""

    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    draft_number: int
    comment: str = ""


class JobFailed(Event, frozen=True, kw_only=True):
    job_id: str
    error_code: str
    message: str


class ThreadFailed(Event, frozen=True, kw_only=True):
    error_code: str
    message: str


class NotificationSent(Event, frozen=True, kw_only=True):
    """The notifier delivered a message about ``cause_event_id`` on ``channel`` (e.g. telegram) to
    ``recipient`` (a chat id); ``kind``: thread_completed, job_failed, thread_failed, ..."""

    cause_event_id: str
    kind: str
    channel: str
    recipient: str
    external_id: str | None = None


class NotificationFailed(Event, frozen=True, kw_only=True):
    """Sending a notification failed after retries; ``message`` is the provider's error."""

    cause_event_id: str
    kind: str
    channel: str
    recipient: str
    message: str


class BackendEvent(Event, frozen=True, kw_only=True):
    """Base of events about one backend; ``aggregate_id`` is the backend name."""

    aggregate_type: ClassVar[str] = "backend"


THREAD_EVENTS: tuple[type[Event], ...] = (
    ThreadOpened,
    JobQueued,
    BackendSelected,
    ExecutionStarted,
    ExecutionCompleted,
    ExecutionFailed,
    DraftPresented,
    QuestionsProposed,
    AnswersRecorded,
    ThreadCompleted,
    ThreadRated,
    JobFailed,
    ThreadFailed,
    NotificationSent,
    NotificationFailed,
)

ALL_EVENTS: tuple[type[Event], ...] = THREAD_EVENTS

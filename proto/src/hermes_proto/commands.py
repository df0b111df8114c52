"""Commands (stream ``HERMES_COMMANDS``, subjects ``hermes.cmd.<type>.<thread_id>``, or ``hermes.cmd.<type>``).

``SubmitIdea``, ``SubmitChat``, ``AnswerQuestions``, ``RateThread`` and ``RequestClassification`` are public: any producer may
publish them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from hermes_proto.agents import AGENT_COMMANDS
from hermes_proto.base import ChatMessage, Command
from hermes_proto.events import Answer, WorkflowError, WorkflowStep, step_order
from hermes_proto.project_memory import MEMORY_COMMANDS

MAX_WORKFLOW_STEPS = 100
"""Hard cap on steps per workflow in the contract; ``HERMES_WORKFLOW_MAX_STEPS`` sets the working limit."""

CALLBACK_URL_MAX_LENGTH = 2048
SOURCE_APP_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
CallbackUrl = Annotated[str, msgspec.Meta(pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$", max_length=CALLBACK_URL_MAX_LENGTH)]
"""An http(s) URL without whitespace; the gateway checks more (host, port, no credentials) before publishing."""
SourceApp = Annotated[str, msgspec.Meta(pattern=SOURCE_APP_PATTERN)]


class SubmitIdea(Command, frozen=True, kw_only=True):
    """Open a thread for ``idea``. ``thread_id`` is chosen by the producer so it can watch the thread
    at once; ``max_questions`` None means the configured default. ``project`` is the budget scope,
    ``private`` keeps every model call on local backends, ``priority`` 1-10 (10 first). ``callback_url``
    (http or https, at most 2048 characters): the notifier POSTs the result there when the thread completes or
    fails; ``source_app`` names the producer (1-64 of ``[A-Za-z0-9_.-]``) and is echoed in that callback.

    Schema version 2. Version 1 carried ``callback_url`` and ``source_app`` in ``origin``; decoding a version-1
    payload moves them out (:mod:`hermes_proto.codec`)."""

    schema_version: int = 2
    thread_id: str
    idea: str
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    max_questions: int | None = None
    project: str = "default"
    private: bool = False
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    callback_url: CallbackUrl | None = None
    source_app: SourceApp | None = None


class SubmitWorkflow(Command, frozen=True, kw_only=True):
    """Open a workflow thread: ``steps`` form a DAG (each runs once all its ``depends_on`` completed, with
    their results as context). Decoding fails (``validation_failed``, dead-lettered) when step ids repeat, a
    dependency is unknown, the dependencies form a cycle, or there are more than :data:`MAX_WORKFLOW_STEPS`.
    ``timeout_s`` bounds the whole workflow (seconds; None: ``HERMES_WORKFLOW_TIMEOUT_MINUTES``); ``callback_url`` as
    :class:`SubmitIdea`'s."""

    thread_id: str
    title: str = ""
    steps: Annotated[list[WorkflowStep], msgspec.Meta(max_length=MAX_WORKFLOW_STEPS)]
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    project: str = "default"
    private: bool = False
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    callback_url: CallbackUrl | None = None

    def __post_init__(self) -> None:
        try:
            step_order(self.steps)
        except WorkflowError as exc:  # msgspec reports it as a ValidationError while decoding
            raise ValueError(str(exc)) from None


class CancelJob(Command, frozen=True, kw_only=True):
    """Stop ``job_id`` of ``thread_id`` (public): a queued job is never dispatched, a running model call is
    stopped at its edge. ``reason``: ``user``, or ``timeout`` when the orchestrator's job timer sends it."""

    thread_id: str
    job_id: str
    reason: str = "user"


class AnswerQuestions(Command, frozen=True, kw_only=True):
    thread_id: str
    answers: list[Answer]


class RateThread(Command, frozen=True, kw_only=True):
    """Rate a completed thread's final draft from 1 to 5 (public). ``comment`` is free text."""

    thread_id: str
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    comment: str = ""


class CloseAnswerWindow(Command, frozen=True, kw_only=True):
    """Internal: the answer timeout of ``thread_id`` elapsed; complete on draft 1 if still unanswered."""

    thread_id: str


class RequestClassification(Command, frozen=True, kw_only=True):
    """Queue the model call that classifies the idea of ``thread_id`` after its draft 1 (public; the learner sends
    it when ``HERMES_CLASSIFICATION_ENABLE_LLM`` is true). The orchestrator appends one ``JobQueued`` of kind
    ``classify`` with this ``job_id`` (producer-chosen, so the producer recognises the result), ``messages``,
    ``max_tokens`` (1-2000 tokens) and ``temperature``, routed as job type ``analysis``; nothing for an unknown or
    closed thread, a workflow, or a job id the thread already has. The job presents no draft and never changes
    the thread's status; its ``ExecutionCompleted`` (or ``JobFailed``) is the producer's to read."""

    thread_id: str
    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=2000)] = 200
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] = 0.0


class SubmitChat(Command, frozen=True, kw_only=True):
    """One chat turn (public): ``messages`` (the conversation as an OpenAI-style client sends it) go to a model
    through the harness (SOUL.md, memory) as a ``JobQueued`` of kind ``chat`` with id ``job_id`` (producer-chosen,
    so the producer can watch its tokens and result) on the session thread ``thread_id``, which the first turn
    opens (kind ``chat``; it stays open: a persistent session). ``session_key`` is the producer's own session id
    (1-200 characters; the same key continues the same session); ``thread_id`` and ``job_id`` are 1-128 of
    ``[A-Za-z0-9_-]`` (they become NATS subject tokens). ``model``/``backend``: what the caller asked for
    (None: the router chooses); ``max_tokens`` (1-32768 tokens) and ``temperature`` None: the orchestrator's
    defaults. ``channel``: api, perception, cli...; ``source_app`` names a perception producer. A job id the
    session already has (a redelivery) queues nothing."""

    thread_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    job_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    session_key: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    messages: Annotated[list[ChatMessage], msgspec.Meta(min_length=1)]
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    model: str | None = None
    backend: str | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1, le=32768)] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0.0, le=2.0)] | None = None
    project: str = "default"
    private: bool = False
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    source_app: SourceApp | None = None


class ExpireWorkflow(Command, frozen=True, kw_only=True):
    """Internal: the workflow ``thread_id`` ran past its ``timeout_s``; stop what still runs and fail it."""

    thread_id: str


ALL_COMMANDS = (
    SubmitIdea,
    AnswerQuestions,
    RateThread,
    CloseAnswerWindow,
    SubmitWorkflow,
    CancelJob,
    ExpireWorkflow,
    RequestClassification,
    SubmitChat,
    *AGENT_COMMANDS,
    *MEMORY_COMMANDS,
)

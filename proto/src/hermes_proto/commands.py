"""Commands (stream ``HERMES_COMMANDS``, subjects ``hermes.cmd.<type>``).

``SubmitIdea``, ``AnswerQuestions`` and ``RateThread`` are public: any producer may publish them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from hermes_proto.base import Command
from hermes_proto.events import Answer


class SubmitIdea(Command, frozen=True, kw_only=True):
    """Open a thread for ``idea``. ``thread_id`` is chosen by the producer so it can watch the thread
    at once; ``max_questions`` None means the configured default. ``project`` is the budget scope,
    ``private`` keeps every model call on local backends, ``priority`` 1-10 (10 first)."""

    thread_id: str
    idea: str
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    max_questions: int | None = None
    project: str = "default"
    private: bool = False
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5


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


ALL_COMMANDS = (SubmitIdea, AnswerQuestions, RateThread, CloseAnswerWindow)

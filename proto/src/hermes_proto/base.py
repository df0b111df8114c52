"""Base message types: every event and command shares these envelope fields."""

from __future__ import annotations

import re
from datetime import datetime
from typing import ClassVar

import msgspec

from hermes_proto import SCHEMA_VERSION
from hermes_proto.tools import ToolCall

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def snake_case(name: str) -> str:
    """``ThreadOpened`` -> ``thread_opened``; the wire tag and the last subject token of an event."""
    return _CAMEL.sub("_", name).lower()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=snake_case):
    """A fact appended to the ``HERMES_EVENTS`` stream (past tense).

    Fields: ``event_id`` (= ``Nats-Msg-Id``, the dedup key), ``aggregate_id`` (the
    thread id for thread events, the backend name for backend events),
    ``schema_version``, ``occurred_at`` (UTC), ``correlation_id`` (the originating
    request), ``causation_id`` (the message that caused this one).
    """

    aggregate_type: ClassVar[str] = "thread"

    event_id: str
    aggregate_id: str
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None

    @classmethod
    def type_name(cls) -> str:
        return snake_case(cls.__name__)


class Command(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=snake_case):
    """A request to change state, published on ``hermes.cmd.<type>.<thread_id>`` (imperative; see
    :func:`hermes_proto.subjects.command_subject`).

    ``command_id`` is the ``Nats-Msg-Id`` and seeds the ids of the events it causes.
    """

    command_id: str
    issued_at: datetime
    schema_version: int = SCHEMA_VERSION
    correlation_id: str | None = None

    @classmethod
    def type_name(cls) -> str:
        return snake_case(cls.__name__)


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One OpenAI-style chat message: ``role`` is ``system``, ``user``, ``assistant`` or ``tool``. An assistant
    message of an agent run may carry the ``tool_calls`` it asked for; a ``tool`` message is one call's result
    (``tool_call_id``, ``name``), its content wrapped as untrusted data (:func:`hermes_proto.tools.untrusted`)."""

    role: str
    content: str
    tool_calls: list[ToolCall] = []
    tool_call_id: str | None = None
    name: str | None = None

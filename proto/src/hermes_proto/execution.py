"""Execution requests (stream ``HERMES_EXEC``, subject ``hermes.exec.<backend>``) and token deltas.

The edge is a dumb pipe: it needs nothing but an :class:`ExecutionRequested`. Each edge process says it is
alive with a :class:`Heartbeat` on core NATS (``hermes.heartbeat.<backend>``) every few seconds.
Token deltas go over core NATS (``hermes.tokens.<thread_id>.<job_id>``), not the log:
they are a live view, the full text arrives in ``ExecutionCompleted``.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from hermes_proto import SCHEMA_VERSION
from hermes_proto.base import ChatMessage
from hermes_proto.tools import ToolSpec


class ExecutionRequested(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag="execution_requested"):
    """Run ``messages`` on ``model`` of ``backend``. ``timeout_s`` bounds the whole model call (seconds);
    ``max_tokens`` bounds the output (tokens)."""

    request_id: str
    thread_id: str
    job_id: str
    backend: str
    model: str
    messages: list[ChatMessage]
    max_tokens: int = 256
    temperature: float = 0.7
    timeout_s: float = 300.0
    tools: list[ToolSpec] = []
    """Tools the model may call (OpenAI ``tools``, Anthropic ``tools``, Ollama ``tools``); empty: none."""
    tool_choice: str | None = None
    """``auto`` (None: the same), ``required`` or a tool's name (OpenAI ``tool_choice``, Anthropic ``any``/``tool``)."""
    correlation_id: str
    requested_at: datetime
    schema_version: int = SCHEMA_VERSION


class TokenDelta(msgspec.Struct, frozen=True, kw_only=True):
    """A piece of streamed output; ``seq`` counts from 0 per job; ``done`` marks the last delta."""

    job_id: str
    seq: int
    text: str
    done: bool = False


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True):
    """An edge's liveness signal, published every few seconds on core NATS ``hermes.heartbeat.<backend>`` (JSON).

    ``models``: configured models (default first) or, when none are configured, those the server lists;
    ``in_flight``: model calls running in this edge process; ``healthy``: the model server answered its
    last probe (or is busy serving a call); ``edge_id`` tells apart several edge processes serving one
    backend."""

    backend: str
    models: list[str]
    in_flight: int
    healthy: bool
    sent_at: datetime
    edge_id: str = ""


class CancelExecution(msgspec.Struct, frozen=True, kw_only=True):
    """Stop the model call of ``job_id`` (core NATS ``hermes.cancel.<backend>``, every edge of the backend gets
    it): the edge that runs it cancels the call and appends ``ExecutionFailed(error_code="cancelled",
    retryable=False)``; an edge that gets the request later drops it. ``reason`` as in ``JobCancelled``."""

    job_id: str
    thread_id: str
    reason: str

"""The edge's pure logic: what a model call is, what it returns, how it fails, and the events it causes.

Nothing here does I/O. Times are milliseconds, token counts are model tokens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

from hermes_proto.base import ChatMessage
from hermes_proto.events import ExecutionCompleted, ExecutionFailed, ExecutionStarted
from hermes_proto.execution import ExecutionRequested
from hermes_proto.ids import derived_id
from hermes_proto.tools import ToolCall, ToolSpec


class ErrorCode(StrEnum):
    """``error_code`` of :class:`ExecutionFailed`; the router and orchestrator decide about retries."""

    TIMEOUT = "timeout"
    CONNECTION_ERROR = "connection_error"
    HTTP_5XX = "http_5xx"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    BAD_REQUEST = "bad_request"
    MALFORMED_RESPONSE = "malformed_response"
    STREAM_CUT = "stream_cut"
    CANCELLED = "cancelled"
    GAVE_UP = "max_deliveries"


class ModelCallFailed(Exception):
    """A model call that produced no result. ``code`` is an :class:`ErrorCode`; ``retryable`` is False
    when retrying the same request cannot help (401/403, other 4xx); ``retry_after_s`` is the provider's
    Retry-After (seconds) on 429; ``latency_ms`` is the time from request to failure."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        latency_ms: float = 0.0,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.latency_ms = latency_ms


@dataclass(frozen=True)
class ModelCall:
    """One chat completion to run: ``max_tokens`` bounds the output (tokens), ``timeout_s`` the whole
    call (seconds, connect to last byte); ``tools``: the tools the model may call (passed to the provider in its
    own shape; empty: none); ``tool_choice``: ``auto``, ``required``, ``none`` or the name of the one tool to call
    (see :func:`tool_choice`)."""

    model: str
    messages: Sequence[ChatMessage]
    max_tokens: int
    temperature: float
    timeout_s: float
    tools: Sequence[ToolSpec] = ()
    tool_choice: str = "auto"


@dataclass(frozen=True)
class ModelReply:
    """The assembled result of a streamed call. ``latency_ms``: request sent to last byte;
    ``first_token_ms``: request sent to first non-empty text chunk (None when no text came);
    ``usage_estimated``: True when the provider reported no usage and the counts come from
    :func:`hermes_proto.costs.estimate_prompt_tokens` / :func:`hermes_proto.costs.estimate_tokens`;
    ``tool_calls``: the calls the model asked for, in the provider's order (finish reason ``tool_calls``)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float
    first_token_ms: float | None
    finish_reason: str | None
    usage_estimated: bool = False
    tool_calls: list[ToolCall] = field(default_factory=list)


AUTO, REQUIRED, NO_TOOL = "auto", "required", "none"
"""The ``tool_choice`` words; any other value is the name of the tool the model must call."""


def tool_choice(value: str | None) -> str:
    """A request's ``tool_choice`` as the edge passes it on: None or empty → ``auto``; ``auto``, ``required`` and
    ``none`` as they are (any case); anything else is a tool's name, kept exactly."""
    if value is None or not value.strip():
        return AUTO
    word = value.strip().lower()
    return word if word in (AUTO, REQUIRED, NO_TOOL) else value.strip()


RAW_ARGUMENTS = "_raw"
"""The key a model's unparsable tool arguments are kept under (``{"_raw": text}``)."""


def tool_arguments(text: str | None) -> dict[str, Any]:
    """A tool call's arguments from the provider's JSON text: the decoded object; ``{}`` for no text (a call
    without arguments); ``{"_raw": text}`` for text that is not a JSON object (never raises)."""
    if text is None or not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {RAW_ARGUMENTS: text}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS: text}


def arguments_text(arguments: dict[str, Any]) -> str:
    """A call's arguments as the JSON text a provider wants back (OpenAI ``function.arguments``); arguments kept
    as ``{"_raw": text}`` go back as the model wrote them."""
    raw = arguments.get(RAW_ARGUMENTS)
    if len(arguments) == 1 and isinstance(raw, str):
        return raw
    return json.dumps(arguments, ensure_ascii=False)


def derived_call_id(index: int) -> str:
    """The id of a call the provider gave none (Ollama): ``call_<index>``, its position in the reply."""
    return f"call_{index}"


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    fragments: list[str] = field(default_factory=list)


@dataclass
class ToolCallParts:
    """Tool calls assembled from streamed fragments keyed by the provider's index (OpenAI ``delta.tool_calls``
    entries, Anthropic content blocks): the first non-empty id and name win (llama.cpp repeats them in every
    fragment), argument fragments are concatenated in order."""

    _parts: dict[int, _PartialCall] = field(default_factory=dict)

    def add(self, index: int, *, call_id: Any = None, name: Any = None, arguments: Any = None) -> None:
        part = self._parts.setdefault(index, _PartialCall())
        if isinstance(call_id, str) and call_id and not part.call_id:
            part.call_id = call_id
        if isinstance(name, str) and name and not part.name:
            part.name = name
        if isinstance(arguments, str) and arguments:
            part.fragments.append(arguments)
        elif isinstance(arguments, dict):  # a server that sends the arguments decoded
            part.fragments.append(json.dumps(arguments))

    def __bool__(self) -> bool:
        return bool(self._parts)

    def calls(self) -> list[ToolCall]:
        """The assembled calls in index order; a call without an id gets ``call_<position>``."""
        parts = [self._parts[i] for i in sorted(self._parts)]
        return [
            ToolCall(
                call_id=part.call_id or derived_call_id(position),
                name=part.name,
                arguments=tool_arguments("".join(part.fragments)),
            )
            for position, part in enumerate(parts)
        ]


@dataclass(frozen=True)
class ProbeResult:
    """The answer of a cheap health probe: ``models`` are the names the server lists."""

    healthy: bool
    models: list[str]
    detail: str = ""


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None when absent
    or unparseable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - now).total_seconds())


def error_for_status(
    status: int, provider_message: str, retry_after_s: float | None = None, latency_ms: float = 0.0
) -> ModelCallFailed:
    """Map an HTTP error status to a :class:`ModelCallFailed`: 429 → rate_limited (Retry-After in the
    message), 401/403 → auth_failed, 408 → timeout, other 4xx → bad_request (both not retryable),
    5xx → http_5xx."""
    detail = provider_message or f"HTTP {status}"
    if status == 429:
        wait = f"; retry after {retry_after_s:g} s" if retry_after_s is not None else ""
        return ModelCallFailed(
            ErrorCode.RATE_LIMITED,
            f"rate limited (HTTP 429){wait}: {detail}",
            retry_after_s=retry_after_s,
            latency_ms=latency_ms,
        )
    if status in (401, 403):
        return ModelCallFailed(
            ErrorCode.AUTH_FAILED, f"HTTP {status}: {detail}", retryable=False, latency_ms=latency_ms
        )
    if status == 408:
        return ModelCallFailed(ErrorCode.TIMEOUT, f"HTTP 408: {detail}", latency_ms=latency_ms)
    if 400 <= status < 500:
        return ModelCallFailed(
            ErrorCode.BAD_REQUEST, f"HTTP {status}: {detail}", retryable=False, latency_ms=latency_ms
        )
    if status >= 500:
        return ModelCallFailed(ErrorCode.HTTP_5XX, f"HTTP {status}: {detail}", latency_ms=latency_ms)
    return ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"unexpected HTTP {status}: {detail}", latency_ms=latency_ms)


def model_call(request: ExecutionRequested, default_model: str | None, timeout_cap_s: float) -> ModelCall:
    """The call for ``request``: its model, or the backend's default model when the request names none;
    the timeout is the smaller of the request's and the backend's (seconds); its ``tool_choice`` normalized by
    :func:`tool_choice`."""
    return ModelCall(
        model=request.model or default_model or "",
        messages=request.messages,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        timeout_s=min(request.timeout_s, timeout_cap_s),
        tools=request.tools,
        tool_choice=tool_choice(request.tool_choice),
    )


def outcome_event_id(request_id: str) -> str:
    """The id of the one terminal event (completed or failed) of a request. Completed and failed share it
    on purpose: if a redelivered request ends differently the second outcome is dropped by JetStream
    deduplication, so a request never has two outcomes in the log."""
    return derived_id(request_id, "execution_outcome")


def started_event(
    request: ExecutionRequested, backend: str, model: str, attempt: int, now: datetime
) -> ExecutionStarted:
    """``ExecutionStarted`` for ``request``; id derived from the request id (idempotent)."""
    return ExecutionStarted(
        event_id=derived_id(request.request_id, "execution_started"),
        aggregate_id=request.thread_id,
        occurred_at=now,
        correlation_id=request.correlation_id,
        causation_id=request.request_id,
        job_id=request.job_id,
        backend=backend,
        model=model,
        attempt=attempt,
    )


def completed_event(
    request: ExecutionRequested, backend: str, model: str, reply: ModelReply, now: datetime
) -> ExecutionCompleted:
    """``ExecutionCompleted`` carrying the reply's text, tool calls, tokens and timings (ms)."""
    return ExecutionCompleted(
        event_id=outcome_event_id(request.request_id),
        aggregate_id=request.thread_id,
        occurred_at=now,
        correlation_id=request.correlation_id,
        causation_id=request.request_id,
        job_id=request.job_id,
        backend=backend,
        model=model,
        text=reply.text,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        latency_ms=round(reply.latency_ms, 3),
        first_token_ms=None if reply.first_token_ms is None else round(reply.first_token_ms, 3),
        finish_reason=reply.finish_reason,
        tool_calls=list(reply.tool_calls),
    )


def failed_event(
    request: ExecutionRequested, backend: str, model: str, error: ModelCallFailed, now: datetime
) -> ExecutionFailed:
    """``ExecutionFailed`` with the error's code, message, retryable flag, latency (ms) and the provider's
    Retry-After (seconds, None when it sent none)."""
    return ExecutionFailed(
        event_id=outcome_event_id(request.request_id),
        aggregate_id=request.thread_id,
        occurred_at=now,
        correlation_id=request.correlation_id,
        causation_id=request.request_id,
        job_id=request.job_id,
        backend=backend,
        model=model,
        error_code=str(error.code),
        message=error.message[:2000],
        retryable=error.retryable,
        latency_ms=round(error.latency_ms, 3),
        retry_after_s=error.retry_after_s,
    )

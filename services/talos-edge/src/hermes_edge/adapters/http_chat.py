"""What every HTTP model-server adapter shares: one streamed POST (aiohttp), timing, error mapping, tracing.

A concrete adapter says which path to call, what body to send, and how to read its stream format;
everything that can go wrong on the wire is mapped here to a :class:`~hermes_edge.domain.ModelCallFailed`.
What is the same for every call of a backend (its URLs, fixed headers, proxy) is prepared once, in the
constructor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp
import msgspec
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode
from yarl import URL

from hermes_proto.costs import estimate_prompt_tokens, estimate_tokens
from hermes_proto.ids import utcnow
from hermes_proto.tools import ToolCall

from hermes_edge.adapters.session import env_proxy
from hermes_edge.domain import (
    ErrorCode,
    ModelCall,
    ModelCallFailed,
    ModelReply,
    ProbeResult,
    ToolCallParts,
    error_for_status,
    parse_retry_after,
)

TextSink = Callable[[str], Awaitable[None]]
"""Receives each non-empty text chunk, in order, as soon as it is read."""

CONNECT_TIMEOUT_S = 10.0
DRAIN_S = 1.0
"""After a reply's terminal marker, how long the rest of the body (normally only the end of the chunked body) may
take to arrive so the connection goes back to the pool; a server still sending after that loses the connection."""
_tracer = trace.get_tracer("hermes.edge")


@dataclass
class StreamState:
    """What has been read so far from one streamed response. Tool calls come whole (``tool_calls``: Ollama, a
    non-streamed completion) or in fragments (``tool_parts``: OpenAI deltas, Anthropic blocks)."""

    started: float
    on_text: TextSink
    parts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    finished: bool = False
    receiving: bool = False
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_parts: ToolCallParts = field(default_factory=ToolCallParts)

    async def add_text(self, chunk: str) -> None:
        if not chunk:
            return
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.parts.append(chunk)
        await self.on_text(chunk)

    def reply(self, call: ModelCall) -> ModelReply:
        """The assembled reply; usage the provider did not report is estimated (and flagged)."""
        text = "".join(self.parts)
        prompt = self.prompt_tokens if self.prompt_tokens is not None else estimate_prompt_tokens(call.messages)
        completion = self.completion_tokens if self.completion_tokens is not None else estimate_tokens(text)
        return ModelReply(
            text=text,
            prompt_tokens=prompt,
            completion_tokens=completion,
            latency_ms=(time.perf_counter() - self.started) * 1000,
            first_token_ms=None if self.first_token_at is None else (self.first_token_at - self.started) * 1000,
            finish_reason=self.finish_reason,
            usage_estimated=self.prompt_tokens is None or self.completion_tokens is None,
            tool_calls=[*self.tool_calls, *self.tool_parts.calls()],
        )


def provider_error_message(body: bytes, limit: int = 500) -> str:
    """The human message of a provider's error body: OpenAI ``{"error": {"message": ...}}``, Ollama
    ``{"error": "..."}``, ``{"message"|"detail": ...}``, else the body text (truncated to ``limit``)."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:limit]
    return json_error_message(payload, text)[:limit]


def json_error_message(payload: Any, fallback: str = "") -> str:
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        for key in ("message", "detail"):
            if payload.get(key):
                return str(payload[key])
    return fallback


def loads_or_malformed(data: str, what: str) -> Any:
    """``json.loads`` that raises ``ModelCallFailed(malformed_response)`` instead of ``ValueError``."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"invalid JSON in {what}: {exc}: {data[:200]!r}") from None


def in_stream_error(payload: dict[str, Any]) -> ModelCallFailed:
    """An error object sent inside a 200 stream (OpenRouter, Ollama): mapped by its numeric ``code`` when
    it has one (429, 4xx, 5xx), else treated as a server-side failure (http_5xx, retryable)."""
    message = json_error_message(payload, json.dumps(payload)[:300])
    error = payload.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    if isinstance(code, int) and 400 <= code < 600:
        return error_for_status(code, f"error in stream: {message}")
    return ModelCallFailed(ErrorCode.HTTP_5XX, f"error in stream: {message}")


class HttpChatAdapter:
    """Streams one chat completion from an HTTP model server (one shared ``aiohttp.ClientSession``, see
    :func:`~hermes_edge.adapters.session.new_session`).

    Subclasses set ``backend_type``, ``chat_path``, ``probe_path`` and implement :meth:`request_body`,
    :meth:`read_stream` and :meth:`listed_models`."""

    backend_type: ClassVar[str] = ""
    chat_path: ClassVar[str] = ""
    probe_path: ClassVar[str] = ""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, api_key: str | None = None) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        parts = urlsplit(self.base_url)
        self._server_address = parts.hostname or ""
        self._server_port = parts.port or (443 if parts.scheme == "https" else 80)
        # The same for every call of this backend: parsed, built and looked up once.
        self._chat_url = _prepared_url(self.base_url + self.chat_path)
        self._probe_url = _prepared_url(self.base_url + self.probe_path)
        self._probe_headers = self._headers()
        self._chat_headers = {**self._probe_headers, "Content-Type": "application/json"}
        self._proxy = env_proxy(self.base_url)

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        raise NotImplementedError

    async def read_stream(self, response: aiohttp.ClientResponse, state: StreamState) -> None:
        """Read the body into ``state`` up to its terminal marker; raise :class:`ModelCallFailed` on a bad body
        or a stream that ends without its terminal marker (stream_cut)."""
        raise NotImplementedError

    def listed_models(self, payload: Any) -> list[str]:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream, application/x-ndjson"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    async def stream_chat(self, call: ModelCall, on_text: TextSink) -> ModelReply:
        """Run ``call`` with streaming, handing each text chunk to ``on_text`` in order; returns the
        assembled :class:`ModelReply` (tokens, ``latency_ms``, ``first_token_ms``).

        Raises :class:`ModelCallFailed` with code timeout (``call.timeout_s`` elapsed while waiting for or
        reading the response), connection_error (refused, unreachable, connect not done within
        :data:`CONNECT_TIMEOUT_S`, closed before a response), http_5xx, rate_limited (429), auth_failed
        (401/403), bad_request (other 4xx), malformed_response (unparseable body) or stream_cut (body ended or
        broke before the terminal marker). Errors raised by ``on_text`` propagate unchanged. Never retries.
        Cancelling the task closes the connection, so the server stops generating."""
        attributes = {
            "gen_ai.system": self.backend_type,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": call.model,
            "gen_ai.request.max_tokens": call.max_tokens,
            "gen_ai.request.temperature": call.temperature,
            "server.address": self._server_address,
            "server.port": self._server_port,
        }
        with _tracer.start_as_current_span(f"chat {call.model}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            started = time.perf_counter()
            try:
                reply = await self._stream(call, on_text, started)
            except ModelCallFailed as exc:
                exc.latency_ms = (time.perf_counter() - started) * 1000
                span.set_attribute("error.type", str(exc.code))
                span.set_status(Status(StatusCode.ERROR, exc.message[:200]))
                raise
            span.set_attribute("gen_ai.usage.input_tokens", reply.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", reply.completion_tokens)
            if reply.finish_reason:
                span.set_attribute("gen_ai.response.finish_reasons", [reply.finish_reason])
            return reply

    async def _stream(self, call: ModelCall, on_text: TextSink, started: float) -> ModelReply:
        state = StreamState(started=started, on_text=on_text)
        headers = dict(self._chat_headers)
        inject(headers)  # W3C traceparent of the CLIENT span, for servers that trace
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(CONNECT_TIMEOUT_S, call.timeout_s))
        try:
            async with asyncio.timeout(call.timeout_s) as deadline:
                async with self._session.post(
                    self._chat_url,
                    data=msgspec.json.encode(self.request_body(call)),
                    headers=headers,
                    timeout=timeout,
                    proxy=self._proxy,
                ) as response:
                    if response.status >= 300:
                        body = await response.read()
                        raise error_for_status(
                            response.status,
                            provider_error_message(body),
                            parse_retry_after(response.headers.get("Retry-After"), utcnow()),
                        )
                    state.receiving = True
                    await self.read_stream(response, state)
                    if state.finished:
                        deadline.reschedule(None)  # the reply is complete: what follows is not the call's time
                        await _drain(response)
        except ModelCallFailed:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise ModelCallFailed(ErrorCode.CONNECTION_ERROR, f"connect timed out: {self.base_url}: {exc!r}") from None
        except TimeoutError:
            where = "after the first byte" if state.receiving else "waiting for the response"
            raise ModelCallFailed(ErrorCode.TIMEOUT, f"no result within {call.timeout_s:g} s ({where})") from None
        except aiohttp.ClientError as exc:
            if state.receiving:  # the body broke: reset, closed mid-chunk, undecodable transfer
                raise ModelCallFailed(
                    ErrorCode.STREAM_CUT, f"stream broke after {len(state.parts)} chunks: {exc!r}"
                ) from None
            raise ModelCallFailed(ErrorCode.CONNECTION_ERROR, f"{self.base_url}: {exc!r}") from None
        if not state.finished:
            raise ModelCallFailed(
                ErrorCode.STREAM_CUT, f"stream ended without its final message after {len(state.parts)} chunks"
            )
        return state.reply(call)

    async def probe(self, timeout_s: float = 3.0) -> ProbeResult:
        """A cheap health check (``GET probe_path``): healthy when the server answers 200 with JSON.
        Never raises; the reason of an unhealthy result is in ``detail``."""
        try:
            async with self._session.get(
                self._probe_url,
                headers=self._probe_headers,
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                status, body = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return ProbeResult(healthy=False, models=[], detail=repr(exc))
        if status != 200:
            return ProbeResult(healthy=False, models=[], detail=f"HTTP {status}")
        try:
            models = self.listed_models(json.loads(body))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return ProbeResult(healthy=False, models=[], detail=f"unreadable model list: {exc!r}")
        return ProbeResult(healthy=True, models=models)


def _prepared_url(url: str) -> URL | str:
    """``url`` parsed once; one yarl cannot parse stays a string, and each call to it fails as aiohttp's
    ``InvalidURL`` (connection_error), as before any call was prepared."""
    try:
        return URL(url)
    except (ValueError, TypeError):
        return url


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read what follows the terminal marker (at most :data:`DRAIN_S` seconds), so the connection is reused:
    aiohttp closes a connection whose body was not read to its end."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(DRAIN_S):
            while await response.content.readany():
                pass

"""What every HTTP model-server adapter shares: one streamed POST, timing, error mapping, tracing.

A concrete adapter says which path to call, what body to send, and how to read its stream format;
everything that can go wrong on the wire is mapped here to a :class:`~hermes_edge.domain.ModelCallFailed`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from hermes_proto.costs import estimate_prompt_tokens, estimate_tokens
from hermes_proto.ids import utcnow
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind, Status, StatusCode

from hermes_edge.domain import (
    ErrorCode,
    ModelCall,
    ModelCallFailed,
    ModelReply,
    ProbeResult,
    error_for_status,
    parse_retry_after,
)

TextSink = Callable[[str], Awaitable[None]]
"""Receives each non-empty text chunk, in order, as soon as it is read."""

CONNECT_TIMEOUT_S = 10.0
_tracer = trace.get_tracer("hermes.edge")


@dataclass
class StreamState:
    """What has been read so far from one streamed response."""

    started: float
    on_text: TextSink
    parts: list[str] = field(default_factory=list)
    first_token_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    finished: bool = False
    receiving: bool = False

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


async def sse_data(response: httpx.Response) -> AsyncIterator[str]:
    """The ``data`` of each Server-Sent Event of ``response``, in order (multi-line data joined by newlines,
    per the WHATWG EventSource spec). Comments, ``event:``/``id:``/``retry:`` fields and blank keep-alives are
    skipped; a last event not closed by a blank line is still yielded."""
    data_lines: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
        elif not line.strip() and data_lines:
            yield "\n".join(data_lines)
            data_lines = []
    if data_lines:
        yield "\n".join(data_lines)


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
    """Streams one chat completion from an HTTP model server (one shared ``httpx.AsyncClient``).

    Subclasses set ``backend_type``, ``chat_path``, ``probe_path`` and implement :meth:`request_body`,
    :meth:`read_stream` and :meth:`listed_models`."""

    backend_type: ClassVar[str] = ""
    chat_path: ClassVar[str] = ""
    probe_path: ClassVar[str] = ""

    def __init__(self, client: httpx.AsyncClient, base_url: str, api_key: str | None = None) -> None:
        self._client = client
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        parts = urlsplit(self.base_url)
        self._server_address = parts.hostname or ""
        self._server_port = parts.port or (443 if parts.scheme == "https" else 80)

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        raise NotImplementedError

    async def read_stream(self, response: httpx.Response, state: StreamState) -> None:
        """Read the whole body into ``state``; raise :class:`ModelCallFailed` on a bad body or a stream
        that ends without its terminal marker (stream_cut)."""
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

        Raises :class:`ModelCallFailed` with code timeout (``call.timeout_s`` elapsed or read timeout),
        connection_error (refused, unreachable, closed before a response), http_5xx, rate_limited (429),
        auth_failed (401/403), bad_request (other 4xx), malformed_response (unparseable body) or
        stream_cut (body ended or broke before the terminal marker). Errors raised by ``on_text``
        propagate unchanged. Never retries."""
        attributes = {
            "gen_ai.system": self.backend_type,
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": call.model,
            "gen_ai.request.max_tokens": call.max_tokens,
            "gen_ai.request.temperature": call.temperature,
            "server.address": self._server_address,
            "server.port": self._server_port,
        }
        with _tracer.start_as_current_span(f"chat {call.model}", kind=SpanKind.CLIENT,
                                           attributes=attributes) as span:
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
        headers = self._headers()
        inject(headers)  # W3C traceparent of the CLIENT span, for servers that trace
        timeout = httpx.Timeout(call.timeout_s, connect=min(CONNECT_TIMEOUT_S, call.timeout_s))
        try:
            async with asyncio.timeout(call.timeout_s):
                async with self._client.stream("POST", self.base_url + self.chat_path,
                                               json=self.request_body(call), headers=headers,
                                               timeout=timeout) as response:
                    if response.status_code >= 300:
                        body = await response.aread()
                        raise error_for_status(
                            response.status_code, provider_error_message(body),
                            parse_retry_after(response.headers.get("retry-after"), utcnow()))
                    state.receiving = True
                    await self.read_stream(response, state)
        except ModelCallFailed:
            raise
        except httpx.ConnectTimeout as exc:
            raise ModelCallFailed(ErrorCode.CONNECTION_ERROR, f"connect timed out: {self.base_url}: {exc!r}") from None
        except (TimeoutError, httpx.TimeoutException):
            where = "after the first byte" if state.receiving else "waiting for the response"
            raise ModelCallFailed(ErrorCode.TIMEOUT, f"no result within {call.timeout_s:g} s ({where})") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if state.receiving:
                raise ModelCallFailed(ErrorCode.STREAM_CUT,
                                      f"stream broke after {len(state.parts)} chunks: {exc!r}") from None
            raise ModelCallFailed(ErrorCode.CONNECTION_ERROR, f"{self.base_url}: {exc!r}") from None
        except (httpx.TransportError, httpx.DecodingError, httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise ModelCallFailed(ErrorCode.CONNECTION_ERROR, f"{self.base_url}: {exc!r}") from None
        if not state.finished:
            raise ModelCallFailed(ErrorCode.STREAM_CUT,
                                  f"stream ended without its final message after {len(state.parts)} chunks")
        return state.reply(call)

    async def probe(self, timeout_s: float = 3.0) -> ProbeResult:
        """A cheap health check (``GET probe_path``): healthy when the server answers 200 with JSON.
        Never raises; the reason of an unhealthy result is in ``detail``."""
        try:
            response = await self._client.get(self.base_url + self.probe_path, headers=self._headers(),
                                              timeout=timeout_s)
        except httpx.HTTPError as exc:
            return ProbeResult(healthy=False, models=[], detail=repr(exc))
        if response.status_code != 200:
            return ProbeResult(healthy=False, models=[], detail=f"HTTP {response.status_code}")
        try:
            models = self.listed_models(response.json())
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return ProbeResult(healthy=False, models=[], detail=f"unreadable model list: {exc!r}")
        return ProbeResult(healthy=True, models=models)

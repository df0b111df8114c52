"""Anthropic's Messages API: ``POST /v1/messages`` streaming Server-Sent Events.

The stream is ``message_start`` (``message.usage.input_tokens``), per content block ``content_block_start``,
``content_block_delta`` (``delta.type`` ``text_delta`` carries ``text``) and ``content_block_stop``, then
``message_delta`` (``delta.stop_reason``, ``usage.output_tokens``: the total so far) and ``message_stop``;
``ping`` may come anywhere and an ``error`` event (``{"type": "error", "error": {"type", "message"}}``) may
replace the rest after the 200. Unknown event types are skipped, as Anthropic's streaming docs ask. Stop
reasons are reported in the OpenAI words the other adapters use (``end_turn`` → ``stop``, ``max_tokens`` →
``length``, ``tool_use`` → ``tool_calls``).

Tools go in ``tools`` as ``{name, description, input_schema}``, a ``tool_choice`` other than ``auto`` as Anthropic's
(``required`` → ``{"type": "any"}``, ``none`` → ``{"type": "none"}``, a tool's name → ``{"type": "tool", "name"}``). A tool call is a ``tool_use`` content block:
streamed, its ``content_block_start`` carries ``id`` and ``name`` and its ``input_json_delta`` deltas the input's
JSON text in pieces (joined per block index); whole, its ``input`` object. An assistant message's calls go back
as ``tool_use`` blocks, tool results as a ``user`` message of ``tool_result`` blocks (``tool_use_id``), the
results of consecutive tool messages in one such message.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import aiohttp

from hermes_proto.base import ChatMessage
from hermes_proto.tools import ToolCall

from hermes_edge.adapters.http_chat import HttpChatAdapter, StreamState, loads_or_malformed
from hermes_edge.adapters.streams import sse_data
from hermes_edge.domain import (
    AUTO,
    NO_TOOL,
    REQUIRED,
    ErrorCode,
    ModelCall,
    ModelCallFailed,
    derived_call_id,
    error_for_status,
)

API_VERSION = "2023-06-01"
# Anthropic's API reference: temperature ranges from 0 to 1 (OpenAI's from 0 to 2).
MAX_TEMPERATURE = 1.0
# The HTTP status of each error ``type`` in Anthropic's "Errors" reference, so an error event inside a 200
# stream maps like the same error before it.
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}


def anthropic_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """The conversation without its system messages, in Anthropic's shape: plain messages as ``{role, content}``;
    an assistant message with tool calls as content blocks (its text, then one ``tool_use`` per call); each run
    of ``tool`` messages as one ``user`` message of ``tool_result`` blocks."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            continue
        if m.role == "tool":
            result = {"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content}
            last = out[-1] if out else None
            if last is not None and last["role"] == "user" and _all_tool_results(last["content"]):
                last["content"].append(result)
            else:
                out.append({"role": "user", "content": [result]})
        elif m.role == "assistant" and m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": call.call_id, "name": call.name, "input": call.arguments}
                for call in m.tool_calls
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def anthropic_tool_choice(choice: str) -> dict[str, Any] | None:
    """Anthropic's ``tool_choice`` for a :func:`hermes_edge.domain.tool_choice`; None for ``auto`` (its default)."""
    if choice == AUTO:
        return None
    if choice == REQUIRED:
        return {"type": "any"}
    if choice == NO_TOOL:
        return {"type": "none"}
    return {"type": "tool", "name": choice}


def _all_tool_results(content: Any) -> bool:
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


class AnthropicAdapter(HttpChatAdapter):
    """``POST {base}/v1/messages`` with ``stream: true``; probe ``GET {base}/v1/models``. The API key is sent
    as ``x-api-key`` with ``anthropic-version: 2023-06-01``. System messages are joined (blank line between)
    into the top-level ``system``; the temperature is capped at 1."""

    backend_type: ClassVar[str] = "anthropic"
    chat_path: ClassVar[str] = "/v1/messages"
    probe_path: ClassVar[str] = "/v1/models?limit=1000"  # the largest page: the whole list at once

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream, application/json", "anthropic-version": API_VERSION}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in call.messages if m.role == "system")
        body: dict[str, Any] = {
            "model": call.model,
            "max_tokens": call.max_tokens,
            "messages": anthropic_messages(list(call.messages)),
            "temperature": min(call.temperature, MAX_TEMPERATURE),
            "stream": True,
        }
        if system:
            body["system"] = system
        if call.tools:
            body["tools"] = [
                {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
                for tool in call.tools
            ]
            choice = anthropic_tool_choice(call.tool_choice)
            if choice is not None:
                body["tool_choice"] = choice
        return body

    def listed_models(self, payload: Any) -> list[str]:
        """``{"data": [{"id": ..., "type": "model"}, ...], "has_more": ...}`` → ids."""
        return [str(item["id"]) for item in payload["data"]]

    async def read_stream(self, response: aiohttp.ClientResponse, state: StreamState) -> None:
        if "application/json" in response.headers.get("Content-Type", ""):
            # The server ignored ``stream: true`` and sent one message object.
            body = (await response.read()).decode("utf-8", errors="replace")
            await self._apply_message(self._event(body, "message"), state)
            state.finished = True
            return
        async with contextlib.aclosing(sse_data(response)) as events:
            async for data in events:
                if await self._apply_event(self._event(data, "stream event"), state):
                    return

    @staticmethod
    def _event(data: str, what: str) -> dict[str, Any]:
        event = loads_or_malformed(data, what)
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"{what} without a 'type': {data[:200]!r}")
        if event["type"] == "error":
            raise stream_error(event)
        return event

    async def _apply_event(self, event: dict[str, Any], state: StreamState) -> bool:
        """Apply one stream event; True at ``message_stop``."""
        kind = event["type"]
        if kind == "message_start":
            self._apply_usage(_field(event, "message").get("usage"), state)
        elif kind == "content_block_start":
            block = _field(event, "content_block")
            if block.get("type") == "tool_use":
                state.tool_parts.add(_block_index(event), call_id=block.get("id"), name=block.get("name"))
        elif kind == "content_block_delta":
            delta = _field(event, "delta")
            if delta.get("type") == "text_delta":
                await state.add_text(str(delta.get("text") or ""))
            elif delta.get("type") == "input_json_delta":
                state.tool_parts.add(_block_index(event), arguments=delta.get("partial_json"))
        elif kind == "message_delta":
            self._apply_stop(_field(event, "delta").get("stop_reason"), state)
            self._apply_usage(event.get("usage"), state)
        elif kind == "message_stop":
            state.finished = True
            return True
        return False

    async def _apply_message(self, message: dict[str, Any], state: StreamState) -> None:
        content = message.get("content")
        if not isinstance(content, list):
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"not a message: {str(message)[:200]}")
        await state.add_text(
            "".join(str(b.get("text") or "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        )
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                arguments = block.get("input")
                state.tool_calls.append(
                    ToolCall(
                        call_id=str(block.get("id") or derived_call_id(len(state.tool_calls))),
                        name=str(block.get("name") or ""),
                        arguments=arguments if isinstance(arguments, dict) else {},
                    )
                )
        self._apply_stop(message.get("stop_reason"), state)
        self._apply_usage(message.get("usage"), state)

    @staticmethod
    def _apply_stop(reason: Any, state: StreamState) -> None:
        if isinstance(reason, str):
            state.finish_reason = STOP_REASONS.get(reason, reason)

    @staticmethod
    def _apply_usage(usage: Any, state: StreamState) -> None:
        """Prompt tokens are ``input_tokens`` plus the prompt-cache counts (Anthropic reports the tokens read
        from or written to its cache apart from ``input_tokens``); ``output_tokens`` is a running total."""
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("input_tokens"), int):
            cached = (usage.get(k) for k in ("cache_creation_input_tokens", "cache_read_input_tokens"))
            state.prompt_tokens = usage["input_tokens"] + sum(n for n in cached if isinstance(n, int))
        if isinstance(usage.get("output_tokens"), int):
            state.completion_tokens = usage["output_tokens"]


def _block_index(event: dict[str, Any]) -> int:
    index = event.get("index")
    return index if isinstance(index, int) else 0


def _field(event: dict[str, Any], name: str) -> dict[str, Any]:
    value = event.get(name)
    if not isinstance(value, dict):
        raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"{event['type']} without an object '{name}'")
    return value


def stream_error(event: dict[str, Any]) -> ModelCallFailed:
    """An ``error`` event (or an error body after a 200): mapped as the HTTP status of its ``error.type``
    (``overloaded_error`` → 529 → http_5xx, retryable); an unknown type counts as a server error."""
    error = event.get("error") if isinstance(event.get("error"), dict) else {}
    kind = str(error.get("type") or "unknown_error")
    return error_for_status(ERROR_STATUS.get(kind, 500), f"error in stream: {kind}: {error.get('message') or ''}")

"""Ollama's native API: ``POST /api/chat`` streaming NDJSON; the last line has ``done: true`` and the counts.

``prompt_eval_count`` is the prompt's tokens and ``eval_count`` the output's. Ollama omits
``prompt_eval_count`` when the whole prompt came from its cache; only then is the prompt count estimated.

Tools go in ``tools`` (the OpenAI function shape); a line's ``message.tool_calls`` carries whole calls
(``{"function": {"name", "arguments": <object>}}``, without ids: each gets ``call_<n>``, its position in the
reply). An assistant message's calls go back in the same shape, a tool result as a ``tool`` message with
``tool_name``.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import aiohttp

from hermes_proto.base import ChatMessage
from hermes_proto.tools import ToolCall

from hermes_edge.adapters.http_chat import HttpChatAdapter, StreamState, in_stream_error, loads_or_malformed
from hermes_edge.adapters.streams import body_lines
from hermes_edge.domain import ErrorCode, ModelCall, ModelCallFailed, derived_call_id, tool_arguments


def ollama_message(message: ChatMessage) -> dict[str, Any]:
    """One message in Ollama's shape: an assistant's ``tool_calls`` as ``{"function": {name, arguments}}``
    (arguments an object), a tool result's ``tool_name``."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": call.name, "arguments": call.arguments}} for call in message.tool_calls
        ]
    if message.role == "tool" and message.name:
        out["tool_name"] = message.name
    return out


class OllamaAdapter(HttpChatAdapter):
    """``POST {base}/api/chat`` with ``stream: true`` and ``options.num_predict`` = ``max_tokens``;
    probe ``GET {base}/api/tags``."""

    backend_type: ClassVar[str] = "ollama"
    chat_path: ClassVar[str] = "/api/chat"
    probe_path: ClassVar[str] = "/api/tags"

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [ollama_message(m) for m in call.messages],
            "stream": True,
            "options": {"num_predict": call.max_tokens, "temperature": call.temperature},
        }
        if call.tools:
            body["tools"] = [tool.openai() for tool in call.tools]
        return body

    def listed_models(self, payload: Any) -> list[str]:
        """``{"models": [{"name": ...}, ...]}`` → names."""
        return [str(item["name"]) for item in payload["models"]]

    async def read_stream(self, response: aiohttp.ClientResponse, state: StreamState) -> None:
        async with contextlib.aclosing(body_lines(response)) as lines:
            async for line in lines:
                if line.strip() and await self._apply_line(line, state):
                    return

    async def _apply_line(self, line: str, state: StreamState) -> bool:
        """Apply one NDJSON line; True at the ``done: true`` line."""
        chunk = loads_or_malformed(line, "stream line")
        if not isinstance(chunk, dict):
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"stream line is not an object: {line[:200]!r}")
        if chunk.get("error"):
            raise in_stream_error(chunk)
        message = chunk.get("message")
        if message is not None:
            if not isinstance(message, dict):
                raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"'message' is not an object: {line[:200]!r}")
            content = message.get("content")
            if isinstance(content, str):
                await state.add_text(content)
            self._apply_calls(message.get("tool_calls"), state)
        elif "done" not in chunk:
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"not a chat chunk: {line[:200]!r}")
        if chunk.get("done") is not True:
            return False
        if isinstance(chunk.get("prompt_eval_count"), int):
            state.prompt_tokens = chunk["prompt_eval_count"]
        if isinstance(chunk.get("eval_count"), int):
            state.completion_tokens = chunk["eval_count"]
        state.finish_reason = chunk.get("done_reason") or "stop"
        if state.tool_calls and state.finish_reason == "stop":
            state.finish_reason = "tool_calls"  # Ollama says stop; the other adapters' word for a call
        state.finished = True
        return True

    @staticmethod
    def _apply_calls(calls: Any, state: StreamState) -> None:
        """``message.tool_calls``: whole calls; arguments an object (a JSON string from some servers is decoded);
        an id is kept when the server sends one, else derived."""
        if not isinstance(calls, list):
            return
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            arguments = function.get("arguments")
            if not isinstance(arguments, dict):
                arguments = tool_arguments(arguments if isinstance(arguments, str) else None)
            call_id = call.get("id")
            state.tool_calls.append(
                ToolCall(
                    call_id=call_id if isinstance(call_id, str) and call_id else derived_call_id(len(state.tool_calls)),
                    name=str(function.get("name") or ""),
                    arguments=arguments,
                )
            )

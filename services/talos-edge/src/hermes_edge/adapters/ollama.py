"""Ollama's native API: ``POST /api/chat`` streaming NDJSON; the last line has ``done: true`` and the counts.

``prompt_eval_count`` is the prompt's tokens and ``eval_count`` the output's. Ollama omits
``prompt_eval_count`` when the whole prompt came from its cache; only then is the prompt count estimated.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import aiohttp

from hermes_edge.adapters.http_chat import HttpChatAdapter, StreamState, in_stream_error, loads_or_malformed
from hermes_edge.adapters.streams import body_lines
from hermes_edge.domain import ErrorCode, ModelCall, ModelCallFailed


class OllamaAdapter(HttpChatAdapter):
    """``POST {base}/api/chat`` with ``stream: true`` and ``options.num_predict`` = ``max_tokens``;
    probe ``GET {base}/api/tags``."""

    backend_type: ClassVar[str] = "ollama"
    chat_path: ClassVar[str] = "/api/chat"
    probe_path: ClassVar[str] = "/api/tags"

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        return {
            "model": call.model,
            "messages": [{"role": m.role, "content": m.content} for m in call.messages],
            "stream": True,
            "options": {"num_predict": call.max_tokens, "temperature": call.temperature},
        }

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
        elif "done" not in chunk:
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"not a chat chunk: {line[:200]!r}")
        if chunk.get("done") is not True:
            return False
        if isinstance(chunk.get("prompt_eval_count"), int):
            state.prompt_tokens = chunk["prompt_eval_count"]
        if isinstance(chunk.get("eval_count"), int):
            state.completion_tokens = chunk["eval_count"]
        state.finish_reason = chunk.get("done_reason") or "stop"
        state.finished = True
        return True

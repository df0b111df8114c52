"""Any OpenAI-compatible server (llama.cpp, vLLM, OpenRouter, OpenAI): ``POST /v1/chat/completions``.

Streams Server-Sent Events: ``data: {chat.completion.chunk}`` lines, usage in a last chunk (asked for with
``stream_options.include_usage``), then ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import aiohttp

from hermes_edge.adapters.http_chat import (
    HttpChatAdapter,
    StreamState,
    in_stream_error,
    loads_or_malformed,
)
from hermes_edge.adapters.streams import sse_data
from hermes_edge.domain import ErrorCode, ModelCall, ModelCallFailed

DONE = "[DONE]"


class OpenAICompatAdapter(HttpChatAdapter):
    """``POST {base}/v1/chat/completions`` with ``stream: true``; probe ``GET {base}/v1/models``.
    The API key, when set, is sent as ``Authorization: Bearer``."""

    backend_type: ClassVar[str] = "openai"
    chat_path: ClassVar[str] = "/v1/chat/completions"
    probe_path: ClassVar[str] = "/v1/models"

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        return {
            "model": call.model,
            "messages": [{"role": m.role, "content": m.content} for m in call.messages],
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    def listed_models(self, payload: Any) -> list[str]:
        """``{"data": [{"id": ...}, ...]}`` → ids."""
        return [str(item["id"]) for item in payload["data"]]

    async def read_stream(self, response: aiohttp.ClientResponse, state: StreamState) -> None:
        if "application/json" in response.headers.get("Content-Type", ""):
            # The server ignored ``stream: true`` and sent one chat.completion object.
            body = (await response.read()).decode("utf-8", errors="replace")
            await self._apply_completion(loads_or_malformed(body, "completion"), state)
            state.finished = True
            return
        async with contextlib.aclosing(sse_data(response)) as events:
            async for data in events:
                if await self._apply_event(data, state):
                    return

    async def _apply_event(self, data: str, state: StreamState) -> bool:
        """Apply one SSE ``data`` payload; True at ``[DONE]``."""
        if data.strip() == DONE:
            state.finished = True
            return True
        chunk = loads_or_malformed(data, "stream chunk")
        if not isinstance(chunk, dict):
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"stream chunk is not an object: {data[:200]!r}")
        if chunk.get("error"):
            raise in_stream_error(chunk)
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"'choices' is not a list: {data[:200]!r}")
        for choice in choices[:1]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise ModelCallFailed(ErrorCode.MALFORMED_RESPONSE, f"choice without 'delta': {data[:200]!r}")
            content = delta.get("content")
            if isinstance(content, str):
                await state.add_text(content)
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
        self._apply_usage(chunk.get("usage"), state)
        return False

    async def _apply_completion(self, payload: Any, state: StreamState) -> None:
        try:
            choice = payload["choices"][0]
            content = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            if isinstance(payload, dict) and payload.get("error"):
                raise in_stream_error(payload) from None
            raise ModelCallFailed(
                ErrorCode.MALFORMED_RESPONSE, f"not a chat completion: {str(payload)[:200]}"
            ) from None
        await state.add_text(str(content))
        state.finish_reason = choice.get("finish_reason")
        self._apply_usage(payload.get("usage"), state)

    @staticmethod
    def _apply_usage(usage: Any, state: StreamState) -> None:
        if not isinstance(usage, dict):
            return
        if isinstance(usage.get("prompt_tokens"), int):
            state.prompt_tokens = usage["prompt_tokens"]
        if isinstance(usage.get("completion_tokens"), int):
            state.completion_tokens = usage["completion_tokens"]

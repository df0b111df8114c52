"""Any OpenAI-compatible server (llama.cpp, vLLM, OpenRouter, OpenAI): ``POST /v1/chat/completions``.

Streams Server-Sent Events: ``data: {chat.completion.chunk}`` lines, usage in a last chunk (asked for with
``stream_options.include_usage``), then ``data: [DONE]``.

A call that offers ``tools`` asks for one ``chat.completion`` object (``stream: false``) and offers them one of two
ways, the backend's ``TOOL_CALLING`` (:attr:`hermes_proto.backends.BackendConfig.tool_calling`):

* ``native`` (default): OpenAI ``tools`` (``ToolSpec.openai()``) and ``tool_choice`` (``auto``, ``required``,
  ``none`` or ``{"type": "function", "function": {"name": ...}}``). Not streamed because llama-cpp-python's
  ``chatml-function-calling`` handler cannot stream an automatic tool choice (it answers 200 and an empty stream).
  The tool calls are read from ``message.tool_calls``, or, from a server that streams anyway, from
  ``delta.tool_calls`` fragments joined by their ``index``.
* ``constrained``: no ``tools``; the tools are described in the system message and the reply is constrained to one
  JSON object, a call or an answer, by ``response_format: {"type": "json_object", "schema": ...}``
  (:mod:`hermes_edge.adapters.constrained`). For a model whose chat template knows no tools, served by
  llama-cpp-python (the embedded model). The object is turned into the reply's tool call or text; only that text
  is handed on as the reply's text chunk, never the JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, ClassVar

import aiohttp

from hermes_proto.base import ChatMessage

from hermes_edge.adapters.constrained import constrained_messages, parse_reply, reply_schema
from hermes_edge.adapters.http_chat import (
    HttpChatAdapter,
    StreamState,
    TextSink,
    in_stream_error,
    loads_or_malformed,
)
from hermes_edge.adapters.streams import sse_data
from hermes_edge.domain import (
    AUTO,
    NO_TOOL,
    REQUIRED,
    ErrorCode,
    ModelCall,
    ModelCallFailed,
    ModelReply,
    arguments_text,
)

DONE = "[DONE]"


def openai_message(message: ChatMessage) -> dict[str, Any]:
    """One message in OpenAI's shape: an assistant's ``tool_calls`` as ``{id, type: function, function: {name,
    arguments: <JSON text>}}``, a tool result's ``tool_call_id``."""
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.call_id,
                "type": "function",
                "function": {"name": call.name, "arguments": arguments_text(call.arguments)},
            }
            for call in message.tool_calls
        ]
    if message.role == "tool" and message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def openai_tool_choice(choice: str) -> str | dict[str, Any]:
    """OpenAI's ``tool_choice`` for a :func:`hermes_edge.domain.tool_choice`: the words as they are, a tool's name
    as ``{"type": "function", "function": {"name": ...}}``."""
    if choice in (AUTO, REQUIRED, NO_TOOL):
        return choice
    return {"type": "function", "function": {"name": choice}}


async def _no_text(_: str) -> None:
    return None


class OpenAICompatAdapter(HttpChatAdapter):
    """``POST {base}/v1/chat/completions`` with ``stream: true`` (``false`` when the call offers tools); probe
    ``GET {base}/v1/models``. The API key, when set, is sent as ``Authorization: Bearer``. ``tool_calling``:
    ``native`` or ``constrained`` (see the module's docstring)."""

    backend_type: ClassVar[str] = "openai"
    chat_path: ClassVar[str] = "/v1/chat/completions"
    probe_path: ClassVar[str] = "/v1/models"

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, api_key: str | None = None, *, tool_calling: str = "native"
    ) -> None:
        super().__init__(session, base_url, api_key)
        self.tool_calling = tool_calling

    def _constrained(self, call: ModelCall) -> bool:
        return bool(call.tools) and self.tool_calling == "constrained"

    async def stream_chat(self, call: ModelCall, on_text: TextSink) -> ModelReply:
        """As :meth:`HttpChatAdapter.stream_chat`; in constrained mode the reply's JSON object becomes its tool call
        (finish reason ``tool_calls``) or its text, handed to ``on_text`` once the object is complete."""
        if not self._constrained(call):
            return await super().stream_chat(call, on_text)
        reply = await super().stream_chat(call, _no_text)
        text, calls = parse_reply(reply.text)
        if text:
            await on_text(text)
        return dataclasses.replace(
            reply,
            text=text,
            tool_calls=calls,
            finish_reason="tool_calls" if calls else reply.finish_reason,
            first_token_ms=reply.first_token_ms if text else None,
        )

    def request_body(self, call: ModelCall) -> dict[str, Any]:
        if self._constrained(call):
            return {
                "model": call.model,
                "messages": constrained_messages(call.messages, call.tools, call.tool_choice),
                "max_tokens": call.max_tokens,
                "temperature": call.temperature,
                "stream": False,
                "response_format": {
                    "type": "json_object",
                    "schema": reply_schema(call.tools, call.tool_choice),
                },
            }
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [openai_message(m) for m in call.messages],
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
        }
        if call.tools:
            body["tools"] = [tool.openai() for tool in call.tools]
            body["tool_choice"] = openai_tool_choice(call.tool_choice)
            body["stream"] = False
        else:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def listed_models(self, payload: Any) -> list[str]:
        """``{"data": [{"id": ...}, ...]}`` → ids."""
        return [str(item["id"]) for item in payload["data"]]

    async def read_stream(self, response: aiohttp.ClientResponse, state: StreamState) -> None:
        if "application/json" in response.headers.get("Content-Type", ""):
            # One chat.completion object: asked for (a call with tools), or the server ignored ``stream: true``.
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
            self._apply_call_fragments(delta.get("tool_calls"), state)
            if choice.get("finish_reason"):
                state.finish_reason = str(choice["finish_reason"])
        self._apply_usage(chunk.get("usage"), state)
        return False

    @staticmethod
    def _apply_call_fragments(fragments: Any, state: StreamState) -> None:
        """``delta.tool_calls``: ``[{index, id?, function: {name?, arguments?}}]``; id and name come in a call's
        first fragment (llama.cpp repeats them), ``arguments`` is a piece of the JSON text."""
        if not isinstance(fragments, list):
            return
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            function = fragment.get("function") if isinstance(fragment.get("function"), dict) else {}
            state.tool_parts.add(
                index if isinstance(index, int) else position,
                call_id=fragment.get("id"),
                name=function.get("name"),
                arguments=function.get("arguments"),
            )

    async def _apply_completion(self, payload: Any, state: StreamState) -> None:
        try:
            choice = payload["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            if isinstance(payload, dict) and payload.get("error"):
                raise in_stream_error(payload) from None
            raise ModelCallFailed(
                ErrorCode.MALFORMED_RESPONSE, f"not a chat completion: {str(payload)[:200]}"
            ) from None
        await state.add_text(str(content))
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            for position, call in enumerate(calls):
                if isinstance(call, dict):  # a whole call: its own position is its index
                    function = call.get("function") if isinstance(call.get("function"), dict) else {}
                    state.tool_parts.add(
                        position, call_id=call.get("id"), name=function.get("name"), arguments=function.get("arguments")
                    )
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

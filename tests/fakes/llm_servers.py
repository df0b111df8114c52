"""Loopback fakes of LLM servers that speak the real wire formats over a real socket on 127.0.0.1.

* :class:`FakeOpenAIServer`: an OpenAI-compatible server (``POST /v1/chat/completions`` streaming SSE
  ``chat.completion.chunk``s, usage chunk when ``stream_options.include_usage``, ``data: [DONE]``; or one
  ``chat.completion`` object; ``GET /v1/models``).
* :class:`FakeOllamaServer`: Ollama's native API (``POST /api/chat`` streaming NDJSON with a final
  ``done: true`` line carrying ``prompt_eval_count``/``eval_count``, or one object with ``stream: false``;
  ``GET /api/tags``).
* :class:`FakeAnthropicServer`: Anthropic's Messages API (``POST /v1/messages`` streaming SSE
  ``message_start`` … ``message_stop`` events, or one ``message`` object without ``stream: true``;
  ``GET /v1/models``; ``x-api-key`` and ``anthropic-version`` headers; Anthropic's error bodies).

All reply with :attr:`FakeLLMServer.reply` (text split into word-sized "tokens", truncated to the request's
max tokens with ``finish_reason`` ``length``), check the API key when ``api_key`` is set, reject unknown
models like the real servers (``strict_models``), record every request in :attr:`FakeLLMServer.requests`,
and inject faults with :meth:`FakeLLMServer.set_fault` (optionally only for the next N chat requests).

Usage::

    async with FakeOpenAIServer(reply=Reply(text="Hello there", prompt_tokens=9)) as server:
        server.base_url            # http://127.0.0.1:<free port>
        server.set_fault(Fault.RATE_LIMITED, retry_after="7", times=1)
        ...
        server.chat_requests()[0].body["messages"]

Run one standalone (e.g. for a manual or end-to-end run)::

    PYTHONPATH=tests python -m fakes.llm_servers openai --port 8080 --text "Hello" --models m1,m2
    PYTHONPATH=tests python -m fakes.llm_servers anthropic --port 8081 --key sk-ant-test --models claude-x
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aiohttp import web

from fakes.loopback import LoopbackServer


class Fault(StrEnum):
    """Injectable failures of a chat request."""

    SLOW_FIRST_BYTE = "slow_first_byte"  # sleep ``delay_s`` before the response headers, then answer normally
    SERVER_ERROR = "server_error"  # HTTP ``status`` (default 500; 529 is Anthropic's overloaded) with an error body
    RATE_LIMITED = "rate_limited"  # HTTP 429 with ``Retry-After: <retry_after>``
    UNAUTHORIZED = "unauthorized"  # HTTP 401
    FORBIDDEN = "forbidden"  # HTTP 403
    BAD_REQUEST = "bad_request"  # HTTP 400 with ``message`` as the provider's error message
    MALFORMED_JSON = "malformed_json"  # 200, then a body (or stream chunk after ``cut_after`` chunks) that is not JSON
    STREAM_CUT = "stream_cut"  # 200, ``cut_after`` chunks, then the connection is dropped mid-body
    ERROR_IN_STREAM = "error_in_stream"  # 200, ``cut_after`` chunks, then an error object inside the stream
    EARLY_END = "early_end"  # 200, ``cut_after`` chunks, then a clean end without the final message/[DONE]


@dataclass
class FaultPlan:
    """A fault and its parameters; ``times`` None means every chat request, else only the next N."""

    kind: Fault
    times: int | None = None
    delay_s: float = 2.0
    retry_after: str = "7"
    message: str = ""
    cut_after: int = 2
    status: int = 500
    used: int = 0

    def applies(self) -> bool:
        return self.times is None or self.used < self.times


@dataclass
class Reply:
    """What the fake model answers. ``completion_tokens`` None reports the number of chunks streamed;
    ``report_usage`` False omits every token count (OpenAI usage chunk / Ollama counts); ``chunk_delay_s``
    paces the stream (seconds between chunks); ``chunks`` overrides the word split of ``text``."""

    text: str = "Plant tomatoes, basil and lettuce in deep pots facing south."
    prompt_tokens: int = 21
    completion_tokens: int | None = None
    report_usage: bool = True
    chunk_delay_s: float = 0.0
    finish_reason: str = "stop"
    chunks: list[str] | None = None

    def split(self) -> list[str]:
        """The reply as streamed chunks: ``"a b c"`` → ``["a", " b", " c"]``."""
        if self.chunks is not None:
            return list(self.chunks)
        return re.findall(r"\s*\S+\s*$|\s*\S+", self.text) or ([self.text] if self.text else [])


RECORDED = web.RequestKey("recorded", object)


@dataclass
class RecordedRequest:
    """One request as received: ``headers`` with lower-case names; ``body`` is the parsed JSON or None;
    ``peer`` is the client's ``host:port`` (the same for requests sent over one kept-alive connection)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    received_at: float = field(default_factory=time.monotonic)
    peer: str = ""


class FakeLLMServer(LoopbackServer):
    """Base of the fakes: a :class:`LoopbackServer` on ``host``:``port`` (0 = a free port), started with
    :meth:`start` or ``async with``. Attributes may be changed while it runs: ``reply``, ``models``,
    ``api_key``, ``healthy`` (False → every endpoint answers 503), ``strict_models`` (unknown model → 404
    like the real servers), ``supports_streaming`` (False → answers one JSON object even when asked to
    stream, as some servers do), ``serial`` (True → one request at a time, the model list included, like
    llama-cpp-python's server: a listing waits until the running generation ends)."""

    chat_path = ""
    models_path = ""

    def __init__(
        self,
        *,
        reply: Reply | None = None,
        models: list[str] | tuple[str, ...] = ("fake-model",),
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        strict_models: bool = True,
    ) -> None:
        self.reply = reply or Reply()
        self.respond: Callable[[Any], str] | None = None
        """When set, the text of each chat reply is ``respond(request body)`` (the rest of :attr:`reply` stays):
        a model whose answer depends on its prompt."""
        self.models = list(models)
        self.api_key = api_key
        self.healthy = True
        self.strict_models = strict_models
        self.supports_streaming = True
        self.serial = False
        self._one_at_a_time = asyncio.Lock()
        super().__init__(host, port)
        self.requests: list[RecordedRequest] = []
        self.fault: FaultPlan | None = None
        self.aborted: list[RecordedRequest] = []
        """Streamed chat calls the client hung up on before the last chunk (e.g. a cancelled job)."""

    # lifecycle ---------------------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.chat_path, self._chat)
        app.router.add_get(self.models_path, self._models)
        self._add_routes(app)

    @property
    def base_url(self) -> str:
        return self.url

    # control -----------------------------------------------------------------------------------------

    def set_fault(
        self,
        kind: Fault | str,
        *,
        times: int | None = None,
        delay_s: float = 2.0,
        retry_after: str = "7",
        message: str = "",
        cut_after: int = 2,
        status: int = 500,
    ) -> FaultPlan:
        """Inject ``kind`` into chat requests (all of them, or the next ``times``); returns the plan."""
        self.fault = FaultPlan(Fault(kind), times, delay_s, retry_after, message, cut_after, status)
        return self.fault

    def clear_fault(self) -> None:
        self.fault = None

    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded chat requests (not the model-list probes), oldest first."""
        return [r for r in self.requests if r.path == self.chat_path]

    # wire format hooks (subclasses) ------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        pass

    bad_key_message = "Incorrect API key provided"

    def _key_ok(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def _invalid_body(self, body: Any) -> str | None:
        """Why the chat request body is refused (HTTP 400), or None."""
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in body["messages"]
            )
        ):
            return "'messages' must be a list of {role, content}"
        return None

    def _error_body(self, message: str, status: int) -> Any:
        raise NotImplementedError

    def _model_list(self) -> Any:
        raise NotImplementedError

    def _wants_stream(self, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        raise NotImplementedError

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chunks: list[str], finish: str, plan: FaultPlan | None
    ) -> web.StreamResponse:
        raise NotImplementedError

    def _completion(self, body: dict[str, Any], text: str, finish: str, completion_tokens: int) -> Any:
        raise NotImplementedError

    def _not_found_message(self, model: str) -> str:
        return f"model '{model}' not found"

    # handlers ----------------------------------------------------------------------------------------

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        peername = request.transport.get_extra_info("peername") if request.transport else None
        recorded = RecordedRequest(
            request.method,
            request.path,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            raw,
            peer=f"{peername[0]}:{peername[1]}" if peername else "",
        )
        self.requests.append(recorded)
        return recorded

    def _json_error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(self._error_body(message, status), status=status, headers=headers)

    def _gate(self, request: web.Request) -> web.Response | None:
        if not self.healthy:
            return self._json_error(503, "service unavailable")
        if self.api_key and not self._key_ok(request):
            return self._json_error(401, self.bad_key_message)
        return None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self._record(request)
        async with self._turn():
            return self._gate(request) or web.json_response(self._model_list())

    def _turn(self) -> contextlib.AbstractAsyncContextManager[object]:
        return self._one_at_a_time if self.serial else contextlib.nullcontext()

    def _take_fault(self) -> FaultPlan | None:
        plan = self.fault
        if plan is None or not plan.applies():
            return None
        plan.used += 1
        return plan

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        async with self._turn():
            return await self._serve_chat(request)

    async def _serve_chat(self, request: web.Request) -> web.StreamResponse:
        recorded = await self._record(request)
        request[RECORDED] = recorded
        refused = self._gate(request)
        if refused is not None:
            return refused
        body = recorded.body
        invalid = self._invalid_body(body)
        if invalid is not None:
            return self._json_error(400, invalid)
        model = body.get("model")
        if self.strict_models and model not in self.models:
            return self._json_error(404, self._not_found_message(str(model)))
        plan = self._take_fault()
        if plan is not None:
            early = await self._early_fault(plan)
            if early is not None:
                return early
        chunks = (Reply(text=self.respond(body)) if self.respond else self.reply).split()
        limit = self._max_tokens(body)
        finish = self.reply.finish_reason
        if limit is not None and 0 <= limit < len(chunks):
            chunks, finish = chunks[:limit], "length"
        if self._wants_stream(body) and self.supports_streaming:
            return await self._stream(request, body, chunks, finish, plan)
        if plan is not None and plan.kind == Fault.MALFORMED_JSON:
            return web.Response(body=b'{"id": "x", "choices": [{"message": ', content_type="application/json")
        if plan is not None and plan.kind == Fault.STREAM_CUT:
            return await self._cut_body(
                request,
                json.dumps(self._completion(body, "".join(chunks), finish, self._completion_tokens(chunks))).encode(),
            )
        return web.json_response(self._completion(body, "".join(chunks), finish, self._completion_tokens(chunks)))

    async def _early_fault(self, plan: FaultPlan) -> web.Response | None:
        """Faults that replace the whole response; None for those that happen inside the body."""
        if plan.kind == Fault.SLOW_FIRST_BYTE:
            await asyncio.sleep(plan.delay_s)
            return None
        if plan.kind == Fault.SERVER_ERROR:
            return self._json_error(plan.status, plan.message or "internal server error")
        if plan.kind == Fault.RATE_LIMITED:
            return self._json_error(
                429, plan.message or "Rate limit reached for requests", headers={"Retry-After": plan.retry_after}
            )
        if plan.kind == Fault.UNAUTHORIZED:
            return self._json_error(401, plan.message or self.bad_key_message)
        if plan.kind == Fault.FORBIDDEN:
            return self._json_error(403, plan.message or "You are not allowed to use this model")
        if plan.kind == Fault.BAD_REQUEST:
            return self._json_error(400, plan.message or "This model's maximum context length is 8192 tokens")
        return None

    async def _cut_body(self, request: web.Request, full: bytes) -> web.StreamResponse:
        """Announce ``full`` by Content-Length, send half of it, drop the connection."""
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = len(full)
        await response.prepare(request)
        await response.write(full[: len(full) // 2])
        assert request.transport is not None
        request.transport.abort()
        return response

    def _completion_tokens(self, chunks: list[str]) -> int:
        return self.reply.completion_tokens if self.reply.completion_tokens is not None else len(chunks)

    async def _write_chunks(
        self,
        request: web.Request,
        response: web.StreamResponse,
        payloads: list[bytes],
        plan: FaultPlan | None,
        cut_at: int,
        bad_payload: bytes,
        error_payload: bytes,
    ) -> web.StreamResponse:
        """Write the stream; an in-body fault of ``plan`` replaces payload ``cut_at`` and what follows."""
        cut_at = min(cut_at, len(payloads) - 1)  # a short reply still gets its fault
        for index, payload in enumerate(payloads):
            if plan is not None and index == cut_at:
                if plan.kind == Fault.STREAM_CUT:
                    assert request.transport is not None
                    request.transport.abort()  # no terminating chunk: the client sees a broken body
                    return response
                if plan.kind == Fault.EARLY_END:
                    await response.write_eof()
                    return response
                if plan.kind in (Fault.MALFORMED_JSON, Fault.ERROR_IN_STREAM):
                    await response.write(bad_payload if plan.kind == Fault.MALFORMED_JSON else error_payload)
                    await response.write_eof()
                    return response
            try:
                if index and self.reply.chunk_delay_s:
                    await asyncio.sleep(self.reply.chunk_delay_s)
                await response.write(payload)
            except (ConnectionError, asyncio.CancelledError):  # the client hung up mid-stream
                self.aborted.append(request[RECORDED])
                raise
        await response.write_eof()
        return response


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class FakeOpenAIServer(FakeLLMServer):
    """OpenAI-compatible chat completions (as served by OpenAI, OpenRouter, vLLM and llama.cpp)."""

    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"

    def _error_body(self, message: str, status: int) -> Any:
        kind = {401: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}.get(
            status, "invalid_request_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": status}}

    def _not_found_message(self, model: str) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    def _model_list(self) -> Any:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "fake"} for m in self.models],
        }

    def _wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        value = body.get("max_completion_tokens", body.get("max_tokens"))
        return value if isinstance(value, int) else None

    def _envelope(self, body: dict[str, Any], cid: str, obj: str) -> dict[str, Any]:
        return {
            "id": cid,
            "object": obj,
            "created": int(time.time()),
            "model": body.get("model"),
            "system_fingerprint": "fp_fake",
        }

    def _usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.reply.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.reply.prompt_tokens + completion_tokens,
        }

    def _completion(self, body: dict[str, Any], text: str, finish: str, completion_tokens: int) -> Any:
        payload = self._envelope(body, f"chatcmpl-{uuid.uuid4().hex[:12]}", "chat.completion")
        payload["choices"] = [
            {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": finish}
        ]
        if self.reply.report_usage:
            payload["usage"] = self._usage(completion_tokens)
        return payload

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chunks: list[str], finish: str, plan: FaultPlan | None
    ) -> web.StreamResponse:
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            payload = self._envelope(body, cid, "chat.completion.chunk") | {"choices": choices} | extra
            return f"data: {json.dumps(payload)}\n\n".encode()

        def choice(delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

        payloads = [event(choice({"role": "assistant", "content": ""}))]
        payloads += [event(choice({"content": c})) for c in chunks]
        payloads.append(event(choice({}, finish)))
        include_usage = (body.get("stream_options") or {}).get("include_usage") is True
        if include_usage and self.reply.report_usage:
            payloads.append(event([], usage=self._usage(self._completion_tokens(chunks))))
        payloads.append(b"data: [DONE]\n\n")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        bad = b'data: {"id": "' + cid.encode() + b'", "choices": [{"delta": {"content": "oops"\n\n'
        message = (plan.message if plan else "") or "upstream provider overloaded"
        error = f"data: {json.dumps({'error': {'message': message, 'code': 502}})}\n\n".encode()
        cut_at = (plan.cut_after if plan else 0) + 1  # the role chunk comes first
        return await self._write_chunks(request, response, payloads, plan, cut_at, bad, error)


class FakeOllamaServer(FakeLLMServer):
    """Ollama's native chat API (``/api/chat``, ``/api/tags``; ``GET /`` answers "Ollama is running")."""

    chat_path = "/api/chat"
    models_path = "/api/tags"

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._root)

    async def _root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    def _error_body(self, message: str, status: int) -> Any:
        return {"error": message}

    def _not_found_message(self, model: str) -> str:
        return f'model "{model}" not found, try pulling it first'

    def _model_list(self) -> Any:
        return {
            "models": [
                {
                    "name": m,
                    "model": m,
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 1000,
                    "digest": uuid.uuid5(uuid.NAMESPACE_DNS, m).hex,
                    "details": {
                        "format": "gguf",
                        "family": "llama",
                        "parameter_size": "3B",
                        "quantization_level": "Q4_K_M",
                    },
                }
                for m in self.models
            ]
        }

    def _wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream", True) is not False  # Ollama streams unless told not to

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        value = (body.get("options") or {}).get("num_predict")
        return value if isinstance(value, int) and value >= 0 else None

    def _final(self, body: dict[str, Any], text: str, finish: str, completion_tokens: int) -> dict[str, Any]:
        final: dict[str, Any] = {
            "model": body.get("model"),
            "created_at": _now_iso(),
            "message": {"role": "assistant", "content": text},
            "done_reason": finish,
            "done": True,
            "total_duration": 1_500_000_000,
            "load_duration": 10_000_000,
            "prompt_eval_duration": 200_000_000,
            "eval_duration": 1_200_000_000,
        }
        if self.reply.report_usage:
            final["prompt_eval_count"] = self.reply.prompt_tokens
            final["eval_count"] = completion_tokens
        return final

    def _completion(self, body: dict[str, Any], text: str, finish: str, completion_tokens: int) -> Any:
        return self._final(body, text, finish, completion_tokens)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chunks: list[str], finish: str, plan: FaultPlan | None
    ) -> web.StreamResponse:
        def line(obj: dict[str, Any]) -> bytes:
            return (json.dumps(obj) + "\n").encode()

        payloads = [
            line(
                {
                    "model": body.get("model"),
                    "created_at": _now_iso(),
                    "message": {"role": "assistant", "content": c},
                    "done": False,
                }
            )
            for c in chunks
        ]
        payloads.append(line(self._final(body, "", finish, self._completion_tokens(chunks))))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        bad = b'{"model": "' + str(body.get("model")).encode() + b'", "message": {"content": "oo\n'
        message = (plan.message if plan else "") or "an error was encountered while running the model: unexpected EOF"
        cut_at = plan.cut_after if plan else 0
        return await self._write_chunks(request, response, payloads, plan, cut_at, bad, line({"error": message}))


class FakeAnthropicServer(FakeLLMServer):
    """Anthropic's Messages API. Like the real one it wants ``anthropic-version`` on every request (400
    without), ``max_tokens`` in every chat, only ``user``/``assistant`` messages (the system prompt is the
    top-level ``system``) and a temperature in [0, 1]; the key goes in ``x-api-key``. Stop reasons are
    Anthropic's: the reply's ``stop``/``length`` are sent as ``end_turn``/``max_tokens``."""

    chat_path = "/v1/messages"
    models_path = "/v1/models"
    bad_key_message = "invalid x-api-key"
    ERROR_TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        529: "overloaded_error",
    }

    def _key_ok(self, request: web.Request) -> bool:
        return request.headers.get("x-api-key") == self.api_key

    def _gate(self, request: web.Request) -> web.Response | None:
        refused = super()._gate(request)
        if refused is None and not request.headers.get("anthropic-version"):
            return self._json_error(400, "anthropic-version: header is required")
        return refused

    def _invalid_body(self, body: Any) -> str | None:
        invalid = super()._invalid_body(body)
        if invalid is not None:
            return invalid
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        for message in body["messages"]:
            if message["role"] not in ("user", "assistant"):
                return (
                    f'messages: Unexpected role "{message["role"]}". The Messages API accepts a top-level '
                    '`system` parameter, not "system" as an input message role.'
                )
        if "system" in body and not isinstance(body["system"], str | list):
            return "system: Input should be a valid string"
        temperature = body.get("temperature", 1.0)
        if not isinstance(temperature, int | float) or not 0 <= temperature <= 1:
            return "temperature: Input should be less than or equal to 1"
        return None

    def _error_body(self, message: str, status: int) -> Any:
        kind = self.ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}",
        }

    def _not_found_message(self, model: str) -> str:
        return f"model: {model}"

    def _model_list(self) -> Any:
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"} for m in self.models
        ]
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def _wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is True

    def _max_tokens(self, body: dict[str, Any]) -> int | None:
        return body["max_tokens"]

    @staticmethod
    def _stop_reason(finish: str) -> str:
        return {"stop": "end_turn", "length": "max_tokens"}.get(finish, finish)

    def _message(
        self, body: dict[str, Any], content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "content": content,
            "model": body.get("model"),
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        if self.reply.report_usage:
            message["usage"] = {"input_tokens": self.reply.prompt_tokens, "output_tokens": output_tokens}
        return message

    def _completion(self, body: dict[str, Any], text: str, finish: str, completion_tokens: int) -> Any:
        return self._message(body, [{"type": "text", "text": text}], self._stop_reason(finish), completion_tokens)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], chunks: list[str], finish: str, plan: FaultPlan | None
    ) -> web.StreamResponse:
        def event(kind: str, **fields: Any) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind} | fields)}\n\n".encode()

        final: dict[str, Any] = {}
        if self.reply.report_usage:
            final["usage"] = {"output_tokens": self._completion_tokens(chunks)}
        payloads = [
            event("message_start", message=self._message(body, [], None, 1)),
            event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
            event("ping"),
        ]
        payloads += [event("content_block_delta", index=0, delta={"type": "text_delta", "text": c}) for c in chunks]
        payloads += [
            event("content_block_stop", index=0),
            event("message_delta", delta={"stop_reason": self._stop_reason(finish), "stop_sequence": None}, **final),
            event("message_stop"),
        ]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        bad = b'event: content_block_delta\ndata: {"type": "content_block_delta", "delta": {"text": "oo\n\n'
        message = (plan.message if plan else "") or "Overloaded"
        error = event("error", error={"type": "overloaded_error", "message": message})
        cut_at = (plan.cut_after if plan else 0) + 3  # message_start, content_block_start and a ping come first
        return await self._write_chunks(request, response, payloads, plan, cut_at, bad, error)


SERVERS: dict[str, type[FakeLLMServer]] = {
    "openai": FakeOpenAIServer,
    "ollama": FakeOllamaServer,
    "anthropic": FakeAnthropicServer,
}


async def _serve_forever(args: argparse.Namespace) -> None:
    server = SERVERS[args.kind](
        reply=Reply(text=args.text),
        models=args.models.split(","),
        api_key=args.key,
        port=args.port,
        strict_models=not args.any_model,
    )
    await server.start()
    print(f"fake {args.kind} server on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=sorted(SERVERS))
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--text", default=Reply.text)
    parser.add_argument("--models", default="fake-model")
    parser.add_argument("--key", default=None)
    parser.add_argument("--any-model", action="store_true", help="accept any model name")
    asyncio.run(_serve_forever(parser.parse_args()))


if __name__ == "__main__":
    main()

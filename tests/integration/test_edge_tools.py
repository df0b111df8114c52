"""Tool calls through the edge: a real edge process on a real JetStream server, calling loopback model servers
that speak each provider's own tool-calling wire format over a real socket.

With ``BACKEND_<NAME>_TOOL_CALLING=constrained`` (the embedded model's, set by ``hermes up``), the OpenAI-compatible
server gets no ``tools``: the system message describes them, ``response_format`` carries the JSON Schema of the one
object it may reply (a call of an offered tool or an answer), and that object comes back as the call or the text.
A request's ``tool_choice`` reaches each provider in its own words (constrained: as the schema's branches).

For each of the OpenAI-compatible API (one ``chat.completion`` object, and an SSE stream of ``delta.tool_calls``
fragments), Ollama's native ``/api/chat`` and Anthropic's Messages API: an ``ExecutionRequested`` with tools
reaches the server as that provider's ``tools``; the server's tool calls come back in ``ExecutionCompleted`` with
their arguments decoded; the next request carries the calls and their results in the provider's shape. Argument
text that is not a JSON object is kept as ``{"_raw": text}`` (and sent back as written), never a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from conftest import thread_events, wait_until
from fakes.loopback import LoopbackServer
from procs import ServiceProcess
from pydantic import ValidationError

from hermes_proto import subjects
from hermes_proto.backends import load_backend
from hermes_proto.base import ChatMessage
from hermes_proto.codec import encode
from hermes_proto.events import ExecutionCompleted, ExecutionFailed
from hermes_proto.execution import ExecutionRequested, TokenDelta
from hermes_proto.ids import new_id, utcnow
from hermes_proto.tools import ToolCall, ToolSpec

from hermes_cli.natsserver import free_port
from hermes_edge.adapters.constrained import parse_reply, reply_schema, tools_prompt
from hermes_tools.builtin import BUILTIN_SPECS

MODEL = "tool-model"
TOOLS = [
    ToolSpec(
        name="read_file",
        description="Read a text file of the workspace.",
        parameters={
            "type": "object",
            "properties": {"path": {"type": "string", "description": "Path inside the workspace"}},
            "required": ["path"],
        },
        read_only=True,
        permission="file_read",
    ),
    ToolSpec(
        name="list_dir",
        description="List a directory of the workspace.",
        parameters={
            "type": "object",
            "properties": {"path": {"type": "string"}, "depth": {"type": "integer"}},
            "required": ["path"],
        },
        read_only=True,
        permission="file_read",
    ),
]
PROMPT = [
    ChatMessage(role="system", content="You are Hermes. Use the tools when they help."),
    ChatMessage(role="user", content="What did I write about the garden?"),
]
FINAL_TEXT = "Your notes say: basil by the window, mint in its own pot."


# --- loopback model servers that call tools -----------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """A tool call as the fake model writes it: ``arguments`` is the JSON text (sent as an object by Ollama);
    ``call_id`` None sends none."""

    call_id: str | None
    name: str
    arguments: str


@dataclass(frozen=True)
class Turn:
    """One scripted reply: optional text, then the tool calls (none: a plain answer)."""

    text: str = ""
    calls: tuple[Call, ...] = ()


def pieces(text: str, size: int = 5) -> list[str]:
    """``text`` cut into fragments of ``size`` characters, as a streaming provider sends JSON arguments."""
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class ToolModelServer(LoopbackServer):
    """Base of the fakes: answers the scripted ``turns`` in order (the last one repeats), records each chat
    request's JSON body in ``bodies``, lists ``MODEL``."""

    chat_path = ""
    models_path = ""

    def __init__(self, turns: list[Turn]) -> None:
        super().__init__()
        self.turns = turns
        self.bodies: list[dict[str, Any]] = []

    def routes(self, app: web.Application) -> None:
        app.router.add_post(self.chat_path, self._chat)
        app.router.add_get(self.models_path, self._models)

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(self.model_list())

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        turn = self.turns[min(len(self.bodies), len(self.turns)) - 1]
        return await self.answer(request, body, turn)

    def model_list(self) -> Any:
        raise NotImplementedError

    async def answer(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        raise NotImplementedError

    @staticmethod
    async def write_all(request: web.Request, content_type: str, payloads: list[bytes]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for payload in payloads:
            await response.write(payload)
        await response.write_eof()
        return response


class OpenAIToolServer(ToolModelServer):
    """``POST /v1/chat/completions``: one ``chat.completion`` object (``message.tool_calls``, arguments as JSON
    text, ``finish_reason: tool_calls``) when asked not to stream; with ``always_stream`` (a server that streams
    whatever it is asked) or ``stream: true`` an SSE stream whose ``delta.tool_calls`` fragments carry id, type and
    name in each call's first fragment and the arguments in pieces, the calls' fragments interleaved."""

    chat_path = "/v1/chat/completions"
    models_path = "/v1/models"
    always_stream = False

    def model_list(self) -> Any:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "fake"}]}

    async def answer(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        finish = "tool_calls" if turn.calls else "stop"
        usage = {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        if not (self.always_stream or body.get("stream") is True):
            message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
            if turn.calls:
                message["tool_calls"] = [
                    {
                        **({"id": c.call_id} if c.call_id else {}),
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in turn.calls
                ]
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                    "usage": usage,
                }
            )

        def event(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            return f"data: {json.dumps(chunk)}\n\n".encode()

        payloads = [event({"role": "assistant", "content": ""})]
        payloads += [event({"content": piece}) for piece in pieces(turn.text, 8) if piece]
        for index, c in enumerate(turn.calls):
            first = {"index": index, "type": "function", "function": {"name": c.name, "arguments": ""}}
            if c.call_id:
                first["id"] = c.call_id
            payloads.append(event({"tool_calls": [first]}))
        split = [pieces(c.arguments) for c in turn.calls]
        for step in range(max((len(s) for s in split), default=0)):  # the calls' argument pieces interleaved
            for index, parts in enumerate(split):
                if step < len(parts):
                    payloads.append(event({"tool_calls": [{"index": index, "function": {"arguments": parts[step]}}]}))
        payloads.append(event({}, finish))
        payloads.append(f"data: {json.dumps({'id': cid, 'choices': [], 'usage': usage})}\n\n".encode())
        payloads.append(b"data: [DONE]\n\n")
        return await self.write_all(request, "text/event-stream", payloads)


class OllamaToolServer(ToolModelServer):
    """``POST /api/chat`` streaming NDJSON: the text in chunks, a chunk whose ``message.tool_calls`` holds the
    whole calls (arguments as objects, no ids), then the ``done: true`` line (``done_reason: stop``)."""

    chat_path = "/api/chat"
    models_path = "/api/tags"

    def model_list(self) -> Any:
        return {"models": [{"name": MODEL, "model": MODEL, "size": 1000}]}

    async def answer(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        def line(message: dict[str, Any], **extra: Any) -> bytes:
            payload = {"model": body["model"], "created_at": "2026-01-01T00:00:00Z", "message": message, **extra}
            return (json.dumps(payload) + "\n").encode()

        payloads = [line({"role": "assistant", "content": p}, done=False) for p in pieces(turn.text, 8) if p]
        if turn.calls:
            calls = [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}} for c in turn.calls]
            payloads.append(line({"role": "assistant", "content": "", "tool_calls": calls}, done=False))
        payloads.append(
            line(
                {"role": "assistant", "content": ""},
                done=True,
                done_reason="stop",
                prompt_eval_count=31,
                eval_count=12,
            )
        )
        return await self.write_all(request, "application/x-ndjson", payloads)


class AnthropicToolServer(ToolModelServer):
    """``POST /v1/messages`` streaming SSE: ``message_start``, a text block, then per call a ``tool_use`` block
    (``content_block_start`` with id and name, ``input_json_delta`` pieces), ``message_delta`` with
    ``stop_reason: tool_use``, ``message_stop``."""

    chat_path = "/v1/messages"
    models_path = "/v1/models"

    def model_list(self) -> Any:
        return {"data": [{"type": "model", "id": MODEL}], "has_more": False}

    async def answer(self, request: web.Request, body: dict[str, Any], turn: Turn) -> web.StreamResponse:
        def event(kind: str, **fields: Any) -> bytes:
            return f"event: {kind}\ndata: {json.dumps({'type': kind} | fields)}\n\n".encode()

        start = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": body["model"]}
        payloads = [event("message_start", message=start | {"usage": {"input_tokens": 31, "output_tokens": 1}})]
        index = 0
        if turn.text:
            payloads.append(event("content_block_start", index=0, content_block={"type": "text", "text": ""}))
            payloads += [
                event("content_block_delta", index=0, delta={"type": "text_delta", "text": p})
                for p in pieces(turn.text, 8)
            ]
            payloads.append(event("content_block_stop", index=0))
            index = 1
        for offset, c in enumerate(turn.calls):
            block = {"type": "tool_use", "id": c.call_id, "name": c.name, "input": {}}
            payloads.append(event("content_block_start", index=index + offset, content_block=block))
            payloads += [
                event(
                    "content_block_delta", index=index + offset, delta={"type": "input_json_delta", "partial_json": p}
                )
                for p in pieces(c.arguments)
            ]
            payloads.append(event("content_block_stop", index=index + offset))
        stop = "tool_use" if turn.calls else "end_turn"
        payloads += [
            event("message_delta", delta={"stop_reason": stop, "stop_sequence": None}, usage={"output_tokens": 12}),
            event("message_stop"),
        ]
        return await self.write_all(request, "text/event-stream", payloads)


class StreamingOpenAIToolServer(OpenAIToolServer):
    always_stream = True


SERVERS: dict[str, tuple[str, type[ToolModelServer]]] = {
    "openai": ("openai", OpenAIToolServer),
    "openai-streamed": ("openai", StreamingOpenAIToolServer),
    "ollama": ("ollama", OllamaToolServer),
    "anthropic": ("anthropic", AnthropicToolServer),
}
"""Case → (the edge's backend type, the fake)."""


# --- the edge and the bus -----------------------------------------------------------------------------------------


@pytest.fixture
async def start_edge(js_client, bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Callable]:
    """``await start_edge(server, kind)`` runs ``python -m hermes_edge`` for backend ``talos`` against ``server``
    and waits for its first heartbeat."""
    nc, _ = js_client
    started: list[tuple[ServiceProcess, ToolModelServer]] = []

    async def start(server: ToolModelServer, kind: str, tool_calling: str | None = None) -> ServiceProcess:
        await server.start()
        env = dict(bus_env)
        if tool_calling is not None:
            env["BACKEND_TALOS_TOOL_CALLING"] = tool_calling
        env.update(
            {
                "HERMES_EDGE_BACKEND": "talos",
                "BACKEND_TALOS_TYPE": kind,
                "BACKEND_TALOS_HOST": "127.0.0.1",
                "BACKEND_TALOS_PORT": str(server.port),
                "BACKEND_TALOS_MODELS": MODEL,
                "BACKEND_TALOS_TIMEOUT": "30",
                "BACKEND_TALOS_KEY": "sk-tools-test",
                "METRICS_PORT": str(free_port()),
                "HERMES_EDGE_HEARTBEAT_S": "0.5",
            }
        )
        beats: list[bytes] = []

        async def on_beat(msg) -> None:
            beats.append(msg.data)

        await nc.subscribe(subjects.heartbeat_subject("talos"), cb=on_beat)
        await nc.flush()
        proc = ServiceProcess(f"edge-{len(started)}", "hermes_edge", env, tmp_path / "logs").start()
        started.append((proc, server))
        await wait_until(lambda: beats or not proc.alive(), timeout_s=20)
        assert proc.alive(), proc.log_text()
        return proc

    yield start
    for proc, server in started:
        await asyncio.to_thread(proc.stop)
        await server.stop()


def new_request(
    messages: list[ChatMessage], tools: list[ToolSpec] = TOOLS, tool_choice: str | None = None
) -> ExecutionRequested:
    return ExecutionRequested(
        request_id=new_id(),
        thread_id=new_id(),
        job_id=new_id(),
        backend="talos",
        model=MODEL,
        messages=messages,
        max_tokens=128,
        temperature=0.2,
        timeout_s=20.0,
        tools=tools,
        tool_choice=tool_choice,
        correlation_id=new_id(),
        requested_at=utcnow(),
    )


async def execute(js, request: ExecutionRequested) -> ExecutionCompleted:
    """Publish ``request`` as the router would and return its ``ExecutionCompleted`` (fails on ExecutionFailed)."""
    await js.publish(subjects.exec_subject("talos"), encode(request), headers={"Nats-Msg-Id": request.request_id})

    async def outcome():
        events = await thread_events(js, request.thread_id)
        return next((e for e in events if isinstance(e, ExecutionCompleted | ExecutionFailed)), None)

    event = await wait_until(outcome, timeout_s=15, interval_s=0.1)
    assert isinstance(event, ExecutionCompleted), event
    return event


def follow_up(request: ExecutionRequested, completed: ExecutionCompleted) -> list[ChatMessage]:
    """The next turn's messages: the conversation, the assistant's calls, one tool result per call."""
    return [
        *request.messages,
        ChatMessage(role="assistant", content=completed.text, tool_calls=completed.tool_calls),
        *(
            ChatMessage(role="tool", content=f"result of {c.name}", tool_call_id=c.call_id, name=c.name)
            for c in completed.tool_calls
        ),
    ]


# --- what each provider must receive --------------------------------------------------------------------------------


def assert_tools_offered(kind: str, body: dict[str, Any]) -> None:
    if kind == "anthropic":
        assert body["tools"] == [
            {"name": t.name, "description": t.description, "input_schema": t.parameters} for t in TOOLS
        ]
        assert body["stream"] is True
        return
    assert body["tools"] == [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in TOOLS
    ]
    if kind == "ollama":
        assert body["stream"] is True
    else:  # llama.cpp's chatml-function-calling cannot stream an automatic tool choice: one completion is asked for
        assert body["stream"] is False and "stream_options" not in body


def assert_history_sent(kind: str, body: dict[str, Any], calls: list[ToolCall], text: str) -> None:
    """The second request carries the assistant's calls and the tool results in the provider's own shape."""
    messages = body["messages"]
    if kind == "anthropic":
        assert body["system"] == PROMPT[0].content
        user, assistant, results = messages
        assert user == {"role": "user", "content": PROMPT[1].content}
        assert assistant == {
            "role": "assistant",
            "content": ([{"type": "text", "text": text}] if text else [])
            + [{"type": "tool_use", "id": c.call_id, "name": c.name, "input": c.arguments} for c in calls],
        }
        assert results == {  # every result of the turn in one user message
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": c.call_id, "content": f"result of {c.name}"} for c in calls
            ],
        }
        return
    system, user, assistant, *results = messages
    assert system == {"role": "system", "content": PROMPT[0].content}
    assert user == {"role": "user", "content": PROMPT[1].content}
    assert assistant["role"] == "assistant" and assistant["content"] == text
    if kind == "ollama":
        assert assistant["tool_calls"] == [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]
        assert results == [{"role": "tool", "content": f"result of {c.name}", "tool_name": c.name} for c in calls]
        return
    assert [{"id": tc["id"], "type": tc["type"], "name": tc["function"]["name"]} for tc in assistant["tool_calls"]] == [
        {"id": c.call_id, "type": "function", "name": c.name} for c in calls
    ]
    for sent, call in zip(assistant["tool_calls"], calls, strict=True):
        assert isinstance(sent["function"]["arguments"], str)  # OpenAI wants the JSON text
        assert json.loads(sent["function"]["arguments"]) == call.arguments
    assert results == [{"role": "tool", "content": f"result of {c.name}", "tool_call_id": c.call_id} for c in calls]


# --- tests --------------------------------------------------------------------------------------------------------

CALLS = (
    Call("call_9f2a", "read_file", '{"path": "notes/garden.md"}'),
    Call("call_7b1c", "list_dir", '{"path": "notes", "depth": 1}'),
)


@pytest.mark.parametrize("case", list(SERVERS))
async def test_tools_reach_the_provider_and_its_calls_come_back_decoded(js_client, start_edge, case: str) -> None:
    _, js = js_client
    kind, server_cls = SERVERS[case]
    preface = "" if case == "openai" else "Let me look."  # llama.cpp's completion: content null, only the calls
    server = server_cls(turns=[Turn(text=preface, calls=CALLS), Turn(text=FINAL_TEXT)])
    await start_edge(server, kind)

    request = new_request(list(PROMPT))
    completed = await execute(js, request)
    ids = ["call_0", "call_1"] if kind == "ollama" else ["call_9f2a", "call_7b1c"]  # Ollama sends none: derived
    assert completed.tool_calls == [
        ToolCall(call_id=ids[0], name="read_file", arguments={"path": "notes/garden.md"}),
        ToolCall(call_id=ids[1], name="list_dir", arguments={"path": "notes", "depth": 1}),
    ]
    assert completed.finish_reason == "tool_calls"
    assert completed.text == preface
    assert (completed.prompt_tokens, completed.completion_tokens) == (31, 12)
    assert_tools_offered(kind, server.bodies[0])
    if kind == "openai":
        assert server.bodies[0]["tool_choice"] == "auto"  # the request named none

    answer = await execute(js, new_request(follow_up(request, completed)))
    assert answer.text == FINAL_TEXT and answer.tool_calls == [] and answer.finish_reason == "stop"
    assert_history_sent(kind, server.bodies[1], completed.tool_calls, preface)
    assert_tools_offered(kind, server.bodies[1])  # still offered: the agent may call again


@pytest.mark.parametrize("case", ["openai", "openai-streamed", "anthropic"])
async def test_arguments_that_are_not_a_json_object_are_kept_raw(js_client, start_edge, case: str) -> None:
    _, js = js_client
    kind, server_cls = SERVERS[case]
    truncated = '{"path": "notes/gar'  # cut off (max_tokens reached mid-call)
    not_an_object = '["notes"]'
    calls = (
        Call("call_1x", "read_file", truncated),
        Call(None if kind == "openai" else "call_2y", "list_dir", not_an_object),
        Call("call_3z", "list_dir", ""),  # a call without arguments
    )
    server = server_cls(turns=[Turn(calls=calls), Turn(text=FINAL_TEXT)])
    await start_edge(server, kind)

    request = new_request(list(PROMPT))
    completed = await execute(js, request)
    assert completed.tool_calls == [
        ToolCall(call_id="call_1x", name="read_file", arguments={"_raw": truncated}),
        # OpenAI sent no id for the second call: its index gives one
        ToolCall(
            call_id="call_1" if kind == "openai" else "call_2y", name="list_dir", arguments={"_raw": not_an_object}
        ),
        ToolCall(call_id="call_3z", name="list_dir", arguments={}),
    ]

    await execute(js, new_request(follow_up(request, completed)))
    sent = server.bodies[1]["messages"]
    if kind == "anthropic":
        inputs = [b["input"] for b in sent[1]["content"] if b["type"] == "tool_use"]
        assert inputs == [{"_raw": truncated}, {"_raw": not_an_object}, {}]
    else:  # the model's own text goes back unchanged
        assert [tc["function"]["arguments"] for tc in sent[2]["tool_calls"]] == [truncated, not_an_object, "{}"]


async def test_a_request_without_tools_is_streamed_as_before(js_client, start_edge) -> None:
    _, js = js_client
    server = OpenAIToolServer(turns=[Turn(text=FINAL_TEXT)])
    await start_edge(server, "openai")
    completed = await execute(js, new_request(list(PROMPT), tools=[]))
    assert completed.text == FINAL_TEXT and completed.tool_calls == []
    [body] = server.bodies
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "tools" not in body and "tool_choice" not in body
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in PROMPT]


# --- tool_choice, native ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "choice", "expected"),
    [
        ("openai", None, "auto"),
        ("openai", "auto", "auto"),
        ("openai", "required", "required"),
        ("openai", "list_dir", {"type": "function", "function": {"name": "list_dir"}}),
        ("anthropic", None, None),  # Anthropic's default is auto: nothing sent
        ("anthropic", "required", {"type": "any"}),
        ("anthropic", "list_dir", {"type": "tool", "name": "list_dir"}),
        ("ollama", "required", None),  # Ollama has no tool_choice
    ],
)
async def test_tool_choice_reaches_the_provider_in_its_own_words(
    js_client, start_edge, kind: str, choice: str | None, expected: Any
) -> None:
    _, js = js_client
    server = dict(SERVERS.values())[kind](turns=[Turn(calls=(CALLS[1],))])
    await start_edge(server, kind)
    await execute(js, new_request(list(PROMPT), tool_choice=choice))
    [body] = server.bodies
    assert_tools_offered(kind, body)
    if expected is None:
        assert "tool_choice" not in body
    else:
        assert body["tool_choice"] == expected


# --- constrained tool calling ---------------------------------------------------------------------------------------


def branch(tool: ToolSpec) -> dict[str, Any]:
    """The reply schema's branch of ``tool`` (TOOLS have no bounds, patterns or descriptions at the top level; the
    property descriptions are dropped for the grammar)."""
    arguments = json.loads(json.dumps(tool.parameters))
    for prop in arguments["properties"].values():
        prop.pop("description", None)
    return {
        "type": "object",
        "properties": {"tool": {"const": tool.name}, "arguments": arguments},
        "required": ["tool", "arguments"],
        "additionalProperties": False,
    }


ANSWER_BRANCH = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}


def assert_constrained(body: dict[str, Any], branches: list[dict[str, Any]]) -> str:
    """A constrained request: no ``tools``, one completion, the reply schema in ``response_format``, the tools in the
    system message (returned)."""
    assert "tools" not in body and "tool_choice" not in body
    assert body["stream"] is False and "stream_options" not in body
    assert body["response_format"] == {"type": "json_object", "schema": {"anyOf": branches}}
    system = body["messages"][0]
    assert system["role"] == "system" and system["content"].startswith(PROMPT[0].content + "\n\n# Tools\n")
    for tool in TOOLS:
        described = next(line for line in system["content"].splitlines() if line.startswith(f"- {tool.name}: "))
        assert tool.description in described
        assert json.dumps(tool.parameters, separators=(",", ":")) in described  # no bounds to drop: all of it
    return system["content"]


async def collect_tokens(nc, request: ExecutionRequested) -> list[TokenDelta]:
    deltas: list[TokenDelta] = []

    async def on_delta(msg) -> None:
        deltas.append(msgspec.json.decode(msg.data, type=TokenDelta))

    await nc.subscribe(subjects.token_subject(request.thread_id, request.job_id), cb=on_delta)
    await nc.flush()
    return deltas


async def test_constrained_tools_go_in_the_prompt_and_the_json_reply_becomes_the_call(js_client, start_edge) -> None:
    nc, js = js_client
    call_object = '{"tool": "read_file", "arguments": {"path": "notes/garden.md"}}'
    server = OpenAIToolServer(turns=[Turn(text=call_object), Turn(text=json.dumps({"answer": FINAL_TEXT}))])
    await start_edge(server, "openai", tool_calling="constrained")

    request = new_request(list(PROMPT), tool_choice="required")
    deltas = await collect_tokens(nc, request)
    completed = await execute(js, request)
    assert completed.tool_calls == [ToolCall(call_id="call_0", name="read_file", arguments={"path": "notes/garden.md"})]
    assert completed.finish_reason == "tool_calls" and completed.text == "" and completed.first_token_ms is None
    assert (completed.prompt_tokens, completed.completion_tokens) == (31, 12)
    system = assert_constrained(server.bodies[0], [branch(t) for t in TOOLS])  # required: no answer branch
    assert "Call a tool now." in system and '{"answer"' not in system
    assert server.bodies[0]["messages"][1:] == [{"role": "user", "content": PROMPT[1].content}]
    await wait_until(lambda: deltas and deltas[-1].done, timeout_s=5)
    assert [d.text for d in deltas] == [""]  # the JSON object is never streamed as text

    follow = new_request(follow_up(request, completed))
    deltas = await collect_tokens(nc, follow)
    answer = await execute(js, follow)
    assert answer.text == FINAL_TEXT and answer.tool_calls == [] and answer.finish_reason == "stop"
    body = server.bodies[1]
    system = assert_constrained(body, [*(branch(t) for t in TOOLS), ANSWER_BRANCH])  # auto: call or answer
    assert '- to answer the user: {"answer": "<your reply to the user>"}' in system
    # the chat template shows the call as the object the model wrote, and the result as a tool message
    assert body["messages"][1:] == [
        {"role": "user", "content": PROMPT[1].content},
        {"role": "assistant", "content": call_object},
        {"role": "tool", "content": "result of read_file", "tool_call_id": "call_0"},
    ]
    await wait_until(lambda: deltas and deltas[-1].done, timeout_s=5)
    assert "".join(d.text for d in deltas) == FINAL_TEXT  # the answer, not its JSON


async def test_constrained_tool_choice_narrows_the_schema(js_client, start_edge) -> None:
    _, js = js_client
    server = OpenAIToolServer(
        turns=[
            Turn(text='{"tool": "list_dir", "arguments": {"path": "notes", "depth": 2}}'),
            Turn(text='{"answer": "Nothing to call."}'),
        ]
    )
    await start_edge(server, "openai", tool_calling="constrained")
    named = await execute(js, new_request(list(PROMPT), tool_choice="list_dir"))
    assert named.tool_calls == [ToolCall(call_id="call_0", name="list_dir", arguments={"path": "notes", "depth": 2})]
    system = assert_constrained(server.bodies[0], [branch(TOOLS[1])])
    assert 'Call the tool list_dir now. Reply with ONE JSON object and nothing else: {"tool": "list_dir"' in system

    none = await execute(js, new_request(list(PROMPT), tool_choice="none"))
    assert none.text == "Nothing to call." and none.tool_calls == []
    assert_constrained(server.bodies[1], [ANSWER_BRANCH])


async def test_a_constrained_reply_that_is_not_the_object_is_the_answer(js_client, start_edge) -> None:
    """Only a server that ignored the schema could send this: its text is the answer, never a failure."""
    _, js = js_client
    server = OpenAIToolServer(
        turns=[Turn(text="Sure! Here are your notes."), Turn(text='{"tool": "list_dir", "arguments": ["notes"]}')]
    )
    await start_edge(server, "openai", tool_calling="constrained")
    plain = await execute(js, new_request([PROMPT[1]]))  # no system message: the tools get one of their own
    assert plain.text == "Sure! Here are your notes." and plain.tool_calls == [] and plain.finish_reason == "stop"
    first = server.bodies[0]["messages"][0]
    assert first["role"] == "system" and first["content"].startswith("# Tools\n")
    assert server.bodies[0]["messages"][1] == {"role": "user", "content": PROMPT[1].content}

    odd = await execute(js, new_request(list(PROMPT)))
    assert odd.tool_calls == [ToolCall(call_id="call_0", name="list_dir", arguments={"_raw": '["notes"]'})]


async def test_constrained_mode_streams_a_request_without_tools_as_before(js_client, start_edge) -> None:
    _, js = js_client
    server = OpenAIToolServer(turns=[Turn(text=FINAL_TEXT)])
    await start_edge(server, "openai", tool_calling="constrained")
    completed = await execute(js, new_request(list(PROMPT), tools=[]))
    assert completed.text == FINAL_TEXT
    [body] = server.bodies
    assert body["stream"] is True and "response_format" not in body
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in PROMPT]


def test_tool_calling_is_a_backend_setting() -> None:
    env = {"BACKEND_LOCAL_TYPE": "openai", "BACKEND_LOCAL_TOOL_CALLING": "Constrained"}
    assert load_backend("local", env).tool_calling == "constrained"
    assert load_backend("other", {}).tool_calling == "native"
    assert load_backend("local", {}, file_fields={"tool_calling": "constrained"}).tool_calling == "constrained"
    with pytest.raises(ValidationError, match="unknown tool calling mode"):
        load_backend("local", {"BACKEND_LOCAL_TOOL_CALLING": "grammar"})
    with pytest.raises(ValidationError, match="needs type 'openai'"):
        load_backend("local", {"BACKEND_LOCAL_TYPE": "ollama", "BACKEND_LOCAL_TOOL_CALLING": "constrained"})


def test_the_reply_schema_of_every_builtin_tool_becomes_a_small_grammar() -> None:
    """llama-cpp-python's server turns ``response_format.schema`` into a grammar and, when it cannot, silently
    constrains to any JSON instead: the schemas Hermes sends must convert, and stay small (the raw ``maxLength: 4096``
    of a path unrolls into thousands of nested rules)."""
    grammar = pytest.importorskip("llama_cpp.llama_grammar")
    tools = list(BUILTIN_SPECS.values())
    raw = grammar.json_schema_to_gbnf(json.dumps({"anyOf": [{"properties": {"a": t.parameters}} for t in tools]}))
    for choice in ("auto", "required", "file_read", "none"):
        gbnf = grammar.json_schema_to_gbnf(json.dumps(reply_schema(tools, choice)))
        assert len(gbnf) < 10_000 < len(raw), (choice, len(gbnf))
    # the prompt ends with a call of the first tool that needs no arguments: a small model copies its shape
    fileops = [BUILTIN_SPECS[n] for n in ("file_read", "file_list", "file_search")]
    assert tools_prompt(fileops, "required").endswith('\nExample: {"tool": "file_list", "arguments": {}}')
    assert "Example:" not in tools_prompt(TOOLS, "auto")  # every test tool needs a path
    # the grammar's strings may hold raw control characters, which strict JSON refuses
    assert parse_reply('{"answer": "two\nlines"}') == ("two\nlines", [])
    assert parse_reply('{"tool": "file_list", "arguments": {"glob": "a\tb"}}')[1][0].arguments == {"glob": "a\tb"}

"""The embedded model calls tools: the real SmolLM2 server, started with the very command ``hermes up`` plans for it,
behind a real edge process (with the ``BACKEND_TALOS_*`` settings ``hermes up`` gives it) on a real JetStream server.

As ``hermes up`` serves it by default (the GGUF's own chat template, ``BACKEND_TALOS_TOOL_CALLING=constrained``): a
request offering the fileops tools with ``tool_choice`` ``required`` comes back as an ``ExecutionCompleted`` with one
tool call of an offered tool with decoded arguments of its schema (the server's grammar allows nothing else), and the
follow-up request carrying that call and its result is answered too. With the opt-in ``chatml-function-calling``
format and ``native`` tool calling, an automatic tool choice comes back as a parsable call as well.

What the model chooses is poor (135M parameters); only the format is checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import thread_events, wait_until
from procs import ServiceProcess

from hermes_proto import subjects
from hermes_proto.base import ChatMessage
from hermes_proto.codec import encode
from hermes_proto.events import ExecutionCompleted, ExecutionFailed
from hermes_proto.execution import ExecutionRequested
from hermes_proto.ids import new_id, utcnow
from hermes_proto.tools import ToolSpec, untrusted

from hermes_cli.natsserver import free_port
from hermes_cli.up import MODEL_ALIAS, TOOLS_CHAT_FORMAT, UpSettings, plan
from hermes_tools.builtin import BUILTIN_SPECS

pytestmark = pytest.mark.e2e

READ_FILE = ToolSpec(
    name="read_file",
    description="Read a text file of the workspace.",
    parameters={
        "type": "object",
        "properties": {"path": {"type": "string", "description": "The file's path"}},
        "required": ["path"],
    },
    read_only=True,
    permission="file_read",
)
FILEOPS = [BUILTIN_SPECS[name] for name in ("file_read", "file_list", "file_search")]
SYSTEM = ChatMessage(role="system", content="You help the user find and understand files in their workspace.")


def model_program(tmp_path: Path, **settings: object):
    """The ``model`` program ``hermes up`` would run with ``settings`` (an outside NATS, so nothing else is made)."""
    up = plan(UpSettings(hermes_home=tmp_path / "home", nats_url="nats://127.0.0.1:4222", **settings))
    return next(p for p in up.programs if p.name == "model"), up.shared


@contextlib.asynccontextmanager
async def served(tmp_path: Path, bus_env: dict[str, str], edge_env: dict[str, str] | None = None, **settings: object):
    """The model server ``hermes up`` plans for ``settings`` and an edge with its ``BACKEND_TALOS_*``; yields the
    program and the seconds the server took to serve."""
    program, shared = model_program(tmp_path, hermes_model_port=free_port(), hermes_model_threads=2, **settings)
    log_path = tmp_path / "model.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(program.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    edge = None
    try:
        models_url = f"http://127.0.0.1:{shared['BACKEND_TALOS_PORT']}/v1/models"

        async def serving() -> bool:
            assert server.poll() is None, log_path.read_text(errors="replace")
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient() as client:
                    return (await client.get(models_url, timeout=2)).status_code == 200
            return False

        await wait_until(serving, timeout_s=120, interval_s=0.5)
        load_s = time.monotonic() - started
        env = {**bus_env, **{k: v for k, v in shared.items() if k.startswith("BACKEND_TALOS_")}, **(edge_env or {})}
        env.update(HERMES_EDGE_BACKEND="talos", METRICS_PORT=str(free_port()), HERMES_EDGE_HEARTBEAT_S="0.5")
        edge = ServiceProcess("edge", "hermes_edge", env, tmp_path / "logs").start()
        await wait_until(lambda: "edge_started" in edge.log_text() or not edge.alive(), timeout_s=30)
        assert edge.alive(), edge.log_text()
        yield program, shared, edge, load_s
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            await asyncio.to_thread(server.wait, 15)


def tools_request(
    messages: list[ChatMessage], tools: list[ToolSpec], tool_choice: str | None = None
) -> ExecutionRequested:
    return ExecutionRequested(
        request_id=new_id(),
        thread_id=new_id(),
        job_id=new_id(),
        backend="talos",
        model=MODEL_ALIAS,
        messages=messages,
        max_tokens=128,
        temperature=0.1,
        timeout_s=240.0,
        tools=tools,
        tool_choice=tool_choice,
        correlation_id=new_id(),
        requested_at=utcnow(),
    )


async def execute(js, edge: ServiceProcess, request: ExecutionRequested) -> ExecutionCompleted:
    await js.publish(subjects.exec_subject("talos"), encode(request), headers={"Nats-Msg-Id": request.request_id})

    async def outcome():
        events = await thread_events(js, request.thread_id)
        return next((e for e in events if isinstance(e, ExecutionCompleted | ExecutionFailed)), None)

    completed = await wait_until(outcome, timeout_s=240, interval_s=0.25)
    assert isinstance(completed, ExecutionCompleted), (completed, edge.log_text()[-3000:])
    return completed


async def test_the_local_model_as_hermes_up_serves_it_calls_a_required_tool_and_takes_its_result(
    js_client, bus_env, tmp_path, monkeypatch
) -> None:
    for name in ("BACKEND_TALOS_HOST", "HERMES_LOCAL_MODEL", "HERMES_MODEL_CHAT_FORMAT", "BACKEND_TALOS_TOOL_CALLING"):
        monkeypatch.delenv(name, raising=False)
    _, js = js_client
    async with served(tmp_path, bus_env) as (program, shared, edge, load_s):
        assert "--chat_format" not in program.argv  # the GGUF's own chat template
        assert shared["BACKEND_TALOS_TOOL_CALLING"] == "constrained"
        first = tools_request(
            [SYSTEM, ChatMessage(role="user", content="List the files in my workspace and tell me their names.")],
            FILEOPS,
            tool_choice="required",
        )
        completed = await execute(js, edge, first)
        assert completed.finish_reason == "tool_calls" and completed.text == ""
        [call] = completed.tool_calls
        assert call.name in {t.name for t in FILEOPS} and call.call_id == "call_0"
        assert "_raw" not in call.arguments, call.arguments
        spec = BUILTIN_SPECS[call.name]
        assert set(call.arguments) <= set(spec.parameters["properties"])  # additionalProperties: false
        assert set(spec.parameters.get("required", [])) <= set(call.arguments)

        result = untrusted(call.name, "notes.md\tfile\t120 B\ngarden-plan.txt\tfile\t48 B")
        follow = tools_request(
            [
                *first.messages,
                ChatMessage(role="assistant", content="", tool_calls=[call]),
                ChatMessage(role="tool", content=result, tool_call_id=call.call_id, name=call.name),
            ],
            FILEOPS,
        )
        answered = await execute(js, edge, follow)
        # auto: a call of an offered tool, or an answer; never the raw JSON object
        assert answered.tool_calls or (answered.text.strip() and not answered.text.lstrip().startswith("{"))
        assert all(c.name in BUILTIN_SPECS and "_raw" not in c.arguments for c in answered.tool_calls)
        print(
            f"\nmodel served after {load_s:.1f} s; turn 1 ({completed.prompt_tokens} prompt tokens): "
            f"{call.name}({call.arguments}) in {completed.latency_ms:.0f} ms; turn 2 ({answered.prompt_tokens} prompt "
            f"tokens): {answered.tool_calls or answered.text!r} in {answered.latency_ms:.0f} ms"
        )


async def test_the_opt_in_function_calling_format_answers_natively(js_client, bus_env, tmp_path, monkeypatch) -> None:
    for name in ("BACKEND_TALOS_HOST", "HERMES_LOCAL_MODEL", "HERMES_MODEL_CHAT_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BACKEND_TALOS_TOOL_CALLING", "native")
    _, js = js_client
    async with served(tmp_path, bus_env, hermes_model_chat_format=TOOLS_CHAT_FORMAT) as (program, shared, edge, _):
        assert list(program.argv[-2:]) == ["--chat_format", TOOLS_CHAT_FORMAT]
        assert shared["BACKEND_TALOS_TOOL_CALLING"] == "native"  # the user's setting wins
        request = tools_request(
            [
                # chatml-function-calling lists the tools in the system message: a request without one describes none
                ChatMessage(
                    role="system", content="You are Hermes, a practical assistant. Use the tools when they help."
                ),
                ChatMessage(role="user", content="Show me what is in my-workspace/bin/list.txt"),
            ],
            [READ_FILE],
        )
        completed = await execute(js, edge, request)
        assert completed.finish_reason == "tool_calls"
        [call] = completed.tool_calls
        assert call.name == "read_file" and call.call_id
        assert "_raw" not in call.arguments and isinstance(call.arguments.get("path"), str), call.arguments

"""The embedded model calls a tool: the real SmolLM2 server, started with the very command ``hermes up`` plans for
it (``HERMES_MODEL_CHAT_FORMAT=chatml-function-calling``, :data:`hermes_cli.up.TOOLS_CHAT_FORMAT`), behind a real
edge process on a real JetStream server. An ``ExecutionRequested`` offering a tool comes back as an
``ExecutionCompleted`` whose tool call names that tool with decoded (grammar-constrained) arguments.

What the model chooses is poor (135M parameters); only the format is checked. The handler's automatic tool choice
is made at temperature 0, so for this prompt it is the same on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
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
from hermes_proto.tools import ToolSpec

from hermes_cli.natsserver import free_port
from hermes_cli.up import MODEL_ALIAS, TOOLS_CHAT_FORMAT, UpSettings, plan

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


def model_program(tmp_path: Path, **settings: object):
    """The ``model`` program ``hermes up`` would run with ``settings`` (an outside NATS, so nothing else is made)."""
    up = plan(UpSettings(hermes_home=tmp_path / "home", nats_url="nats://127.0.0.1:4222", **settings))
    return next(p for p in up.programs if p.name == "model"), up.shared


async def test_the_local_model_answers_a_tools_request_with_a_parsable_call(
    js_client, bus_env, tmp_path, monkeypatch
) -> None:
    for name in ("BACKEND_TALOS_HOST", "HERMES_LOCAL_MODEL", "HERMES_MODEL_CHAT_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    default, _ = model_program(tmp_path)
    assert "--chat_format" not in default.argv  # plain chat keeps the model's own template (see TOOLS_CHAT_FORMAT)

    program, shared = model_program(
        tmp_path, hermes_model_port=free_port(), hermes_model_chat_format=TOOLS_CHAT_FORMAT, hermes_model_threads=2
    )
    assert list(program.argv[-2:]) == ["--chat_format", TOOLS_CHAT_FORMAT]
    log_path = tmp_path / "model.log"
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

        _, js = js_client
        env = {**bus_env, **{k: v for k, v in shared.items() if k.startswith("BACKEND_TALOS_")}}
        env.update(HERMES_EDGE_BACKEND="talos", METRICS_PORT=str(free_port()), HERMES_EDGE_HEARTBEAT_S="0.5")
        edge = ServiceProcess("edge", "hermes_edge", env, tmp_path / "logs").start()
        await wait_until(lambda: "edge_started" in edge.log_text() or not edge.alive(), timeout_s=30)
        assert edge.alive(), edge.log_text()

        request = ExecutionRequested(
            request_id=new_id(),
            thread_id=new_id(),
            job_id=new_id(),
            backend="talos",
            model=MODEL_ALIAS,
            # the handler lists the tools in the system message: a request without one describes none
            messages=[
                ChatMessage(
                    role="system", content="You are Hermes, a practical assistant. Use the tools when they help."
                ),
                ChatMessage(role="user", content="Show me what is in my-workspace/bin/list.txt"),
            ],
            max_tokens=64,
            temperature=0.2,
            timeout_s=240.0,
            tools=[READ_FILE],
            correlation_id=new_id(),
            requested_at=utcnow(),
        )
        await js.publish(subjects.exec_subject("talos"), encode(request), headers={"Nats-Msg-Id": request.request_id})

        async def outcome():
            events = await thread_events(js, request.thread_id)
            return next((e for e in events if isinstance(e, ExecutionCompleted | ExecutionFailed)), None)

        completed = await wait_until(outcome, timeout_s=240, interval_s=0.5)
        assert isinstance(completed, ExecutionCompleted), (completed, edge.log_text()[-3000:])
        assert completed.finish_reason == "tool_calls"
        [call] = completed.tool_calls
        assert call.name == "read_file" and call.call_id
        assert "_raw" not in call.arguments and isinstance(call.arguments.get("path"), str), call.arguments
    finally:
        if edge is not None:
            await asyncio.to_thread(edge.stop)
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            await asyncio.to_thread(server.wait, 15)

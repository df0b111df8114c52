"""Agent runs through the SDK (``hermes_sdk``) and the ``hermes`` agent commands against the real stack: the gateway,
orchestrator, backend-router, talos-edge and tool service as processes on a real NATS server (auth on: a Bearer
token), the edge in front of a loopback OpenAI-compatible model written here, which asks for tool calls.

The model's script, whatever the task: turn 1 asks for ``file_list(".")`` (reading inside the workspace: allowed by
default) and ``file_write("hello.txt", "hi from the agent")`` (a file edit: asked by default); once it has the
results it answers :data:`ANSWER`. So every run lists the workspace, waits for an approval of the write, and
completes after the decision. The tool service runs the calls for real (in its sandbox) in
``$HERMES_HOME/workspace/<project>``.

Proves: a run followed with :meth:`AsyncHermes.steps` shows each step once, in order; approving from the stream runs
the write (the file is there) and the run completes with the answer; :meth:`Hermes.wait`, ``agent_run`` (steps,
approvals), ``agent_runs``, ``approvals``; ``hermes do`` prints the approval's commands, ``hermes approvals reject``
answers it (the model is told) and ``do`` exits 0 with the answer; ``hermes cancel RUN_ID`` stops a run waiting for
approval and ``do`` exits 1.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from conftest import wait_until
from procs import ServiceProcess, model_env, service_processes, start_ready

from hermes_cli.natsserver import free_port
from hermes_sdk import AsyncHermes, Hermes, HermesError, steps

TOKEN = "tok-ann-sdk-7d41"
ANSWER = "I listed the workspace and wrote hello.txt."
CONTENT = "hi from the agent"


class AgentModel:
    """An OpenAI-compatible model on loopback that drives every run through one approval (see the module doc);
    ``requests``: each chat request's JSON body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> AgentModel:
        app = web.Application()
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        answered = any(m.get("role") == "tool" for m in body.get("messages", []))
        calls = []
        if body.get("tools") and not answered:
            calls = [
                ("file_list", {"path": "."}),
                ("file_write", {"path": "hello.txt", "content": CONTENT}),
            ]
        text = "Let me look at the workspace first." if calls else ANSWER
        usage = {"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}
        if body.get("stream"):
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(request)
            for chunk in (
                {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
                {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {"choices": [], "usage": usage},
            ):
                await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await response.write(b"data: [DONE]\n\n")
            return response
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = [
                {"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for n, (name, args) in enumerate(calls)
            ]
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}
        return web.json_response(
            {"id": "cmpl-1", "object": "chat.completion", "model": "fake", "choices": [choice], "usage": usage}
        )


@dataclass
class AgentStack:
    url: str
    home: Path
    model: AgentModel
    procs: dict[str, ServiceProcess]

    def workspace(self, project: str) -> Path:
        return self.home / "workspace" / project

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log_text()[-3000:]}" for name, p in self.procs.items())


async def start_tools(proc: ServiceProcess, timeout_s: float = 60.0) -> None:
    """Start the tool service and wait for its ``tools_started`` line (it is not in :data:`procs.READY_MARKERS`)."""
    offset = proc.log_size()
    proc.start()

    def ready() -> bool:
        assert proc.alive(), proc.log_text()[-3000:]
        return proc.logged_since(offset, "tools_started")

    await wait_until(ready, timeout_s=timeout_s, interval_s=0.1)


@pytest.fixture
async def agent_stack(bus_env: dict[str, str], tmp_path: Path) -> AsyncIterator[AgentStack]:
    model = await AgentModel().start()
    port = free_port()
    env = dict(
        bus_env,
        **model_env(model.port),
        METRICS_PORT="0",
        HERMES_WEB_HOST="127.0.0.1",
        HERMES_WEB_PORT=str(port),
        HERMES_EDGE_HEARTBEAT_S="0.5",
        HERMES_API_TOKENS=f"ann:admin:{TOKEN}",
    )
    log_dir = tmp_path / "logs"
    procs = service_processes(env, log_dir, ("orchestrator", "router", "edge", "gateway"))
    procs["tools"] = ServiceProcess("tools", "hermes_tools", env, log_dir)
    stack = AgentStack(f"http://127.0.0.1:{port}", Path(bus_env["HERMES_HOME"]), model, procs)
    try:
        await asyncio.gather(
            start_tools(procs["tools"]), *(start_ready(p) for name, p in procs.items() if name != "tools")
        )

        async def healthy() -> bool:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{stack.url}/api/system/health", timeout=5)).status_code == 200

        await wait_until(healthy, timeout_s=30, interval_s=0.2)
        yield stack
    finally:
        await asyncio.gather(*(asyncio.to_thread(p.stop) for p in procs.values()))
        await model.stop()


async def test_a_run_streams_its_steps_waits_for_approval_and_completes(agent_stack: AgentStack) -> None:
    async with AsyncHermes(agent_stack.url, TOKEN) as hermes:
        profiles = {p.name for p in await hermes.profiles()}
        assert {"code", "fileops", "research"} <= profiles
        started = await hermes.run_agent("Write hello.txt saying hi", profile="code", project="sdk")
        assert started.thread_id == started.run_id and started.profile == "code"
        seen: list[steps.Step] = []
        try:
            async for step in hermes.steps(started.run_id, timeout_s=90):
                seen.append(step)
                if isinstance(step, steps.ApprovalRequested):
                    [pending] = await hermes.approvals(run_id=started.run_id)
                    assert (pending.approval_id, pending.tool, pending.status) == (
                        step.approval_id,
                        "file_write",
                        "pending",
                    )
                    assert pending.arguments == {"path": "hello.txt", "content": CONTENT}
                    decided = await hermes.approve(step.approval_id, comment="fine")
                    assert decided.decision == "approve"
        except TimeoutError:
            raise AssertionError(f"steps: {[s.type for s in seen]}\n{agent_stack.logs()}") from None

        agent_steps = [s for s in seen if type(s) is not steps.Step]  # the typed ones (not job_queued and such)
        sequences = [s.sequence for s in seen]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)  # each once, in order
        first = agent_steps[0]
        assert isinstance(first, steps.AgentRunStarted) and first.profile == "code" and "file_write" in first.tools
        requested = {s.name: s for s in agent_steps if isinstance(s, steps.ToolCallRequested)}
        assert requested["file_list"].decision == "allow" and requested["file_write"].decision == "ask"
        [granted] = [s for s in agent_steps if isinstance(s, steps.ApprovalGranted)]
        assert (granted.by, granted.comment, granted.scope) == ("ann", "fine", "once")
        completed = {s.name: s for s in agent_steps if isinstance(s, steps.ToolCallCompleted)}
        assert set(completed) == {"file_list", "file_write"} and not completed["file_write"].is_error
        end = seen[-1]
        assert isinstance(end, steps.AgentRunCompleted) and end.ends_run
        assert end.answer == ANSWER and end.iterations == 2 and end.tool_calls == 2
        assert (agent_stack.workspace("sdk") / "hello.txt").read_text() == CONTENT

        run = await hermes.agent_run(started.run_id)
        assert run.status == "completed" and run.answer == ANSWER and run.profile == "code"
        assert [a.status for a in run.approvals] == ["granted"]
        assert "approval_requested" in [s.type for s in run.steps]
        assert started.run_id in [r.run_id for r in await hermes.agent_runs()]
        assert await hermes.approvals() == []  # nothing pending any more
        with pytest.raises(HermesError) as caught:
            await hermes.cancel_run(started.run_id)
        assert (caught.value.status, caught.value.code) == (409, "run_ended")
        with pytest.raises(HermesError) as caught:
            await hermes.approve(granted.approval_id)
        assert (caught.value.status, caught.value.code) == (409, "approval_closed")

    # The sync client: wait() returns at once for an ended run; another token sees nothing of ann's.
    with Hermes(agent_stack.url, TOKEN) as hermes:
        assert hermes.wait(started.run_id, timeout_s=10).succeeded
    with Hermes(agent_stack.url, "wrong-token") as stranger, pytest.raises(HermesError) as caught:
        stranger.agent_runs()
    assert caught.value.status == 401


@dataclass
class Cli:
    proc: asyncio.subprocess.Process
    out: str = ""
    err: str = ""
    readers: list[asyncio.Task] = field(default_factory=list)

    async def _pump(self, stream: asyncio.StreamReader, name: str) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")()
        while chunk := await stream.read(256):
            setattr(self, name, getattr(self, name) + decoder.decode(chunk))

    async def wait(self, timeout_s: float = 60) -> int:
        code = await asyncio.wait_for(self.proc.wait(), timeout_s)
        await asyncio.gather(*self.readers)
        return code


async def hermes_cli(stack: AgentStack, *args: str) -> Cli:
    env = {k: v for k, v in os.environ.items() if k not in ("HERMES_URL", "HERMES_TOKEN", "HERMES_WEB_PORT")}
    env.update(HERMES_URL=stack.url, HERMES_TOKEN=TOKEN, HERMES_HOME=str(stack.home / "cli"), PYTHONUNBUFFERED="1")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hermes_cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    cli = Cli(proc)
    cli.readers = [
        asyncio.create_task(cli._pump(proc.stdout, "out")),
        asyncio.create_task(cli._pump(proc.stderr, "err")),
    ]
    return cli


async def run_cli(stack: AgentStack, *args: str) -> tuple[int, str, str]:
    cli = await hermes_cli(stack, *args)
    return await cli.wait(), cli.out, cli.err


def approval_id(out: str) -> str | None:
    for line in out.splitlines():
        if "hermes approvals reject " in line:
            return line.split("hermes approvals reject ", 1)[1].split()[0]
    return None


async def test_hermes_do_with_a_rejection_and_a_cancellation(agent_stack: AgentStack) -> None:
    do = await hermes_cli(agent_stack, "do", "Write hello.txt saying hi", "--profile", "code", "--project", "cli")
    try:
        waiting = await wait_until(lambda: approval_id(do.out), timeout_s=60, interval_s=0.1)
    except TimeoutError:
        raise AssertionError(f"{do.out}\n{do.err}\n{agent_stack.logs()}") from None
    assert '→ file_write {"path": "hello.txt", "content": "hi from the agent"}  [needs approval]' in do.out
    code, out, err = await run_cli(agent_stack, "approvals")
    assert code == 0 and waiting in out and "file_write" in out, err
    code, out, err = await run_cli(agent_stack, "approvals", "reject", waiting, "-m", "not now")
    assert code == 0 and f"Rejected {waiting}." in out, err
    assert await do.wait() == 0, (do.out, do.err)
    assert "✗ rejected by ann: not now" in do.out
    assert f"Answer:\n{ANSWER}" in do.out
    assert not (agent_stack.workspace("cli") / "hello.txt").exists()  # rejected: never written
    told = [m for m in agent_stack.model.requests[-1]["messages"] if m.get("role") == "tool"]
    assert any("rejected" in m["content"] and "not now" in m["content"] for m in told), told

    run_id = do.out.split("Agent run ", 1)[1].split()[0]
    code, out, _ = await run_cli(agent_stack, "runs")
    assert code == 0 and run_id in out and "completed" in out
    code, out, _ = await run_cli(agent_stack, "run", run_id)
    assert code == 0 and f"Run {run_id}: completed" in out and ANSWER in out

    # A run waiting for approval, cancelled: `do` ends with exit 1.
    do = await hermes_cli(agent_stack, "do", "Write hello.txt again", "--profile", "code", "--project", "cli")
    await wait_until(lambda: approval_id(do.out), timeout_s=60, interval_s=0.1)
    run_id = do.out.split("Agent run ", 1)[1].split()[0]
    code, out, err = await run_cli(agent_stack, "cancel", run_id)
    assert code == 0 and f"Cancelling agent run {run_id}." in out, err
    assert await do.wait() == 1
    assert f"run {run_id} was cancelled by ann" in do.err

"""The Python SDK (``hermes_sdk``: :class:`Hermes` and :class:`AsyncHermes`) and the ``hermes`` agent commands built
on it, against a stand-in gateway on loopback written here (``http.server`` in a thread).

The stand-in speaks the gateway's envelope (``{"status": "success", "data"}`` / ``{"status": "error", "error":
{"code", "message", "user_action", "details"}}``) and its Server-Sent Events as ``GET /api/threads/{id}/events``
sends them (sse-starlette framing: ``\\r\\n`` line ends, ``event:`` the event type, ``id:`` the log sequence, the event
JSON as ``data:``, a first comment carrying ``retry:``, keep-alive comments, token deltas without an id, 204 when
resuming past the end); it records every request. Each test runs against both clients (the ``client`` fixture):
typed results, the Bearer token, error mapping, and a run's steps across connections that end early or break
mid-chunk (resumed with ``Last-Event-ID``: nothing missed, nothing twice), stopping at the run's end.
"""

from __future__ import annotations

import inspect
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from hermes_cli import client as cli_client
from hermes_cli.__main__ import build_app
from hermes_cli.natsserver import free_port
from hermes_sdk import (
    Accepted,
    AgentRun,
    AsyncHermes,
    Hermes,
    HermesError,
    HermesUnreachable,
    RunStarted,
    SseEvent,
    Submitted,
    Thread,
    parse_sse,
    steps,
)

TOKEN = "tok-sdk-3f0c"
NOW = "2026-01-01T10:00:00Z"


# ---- the stand-in gateway -------------------------------------------------------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


def ok(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps({"status": "success", "data": data, "meta": {}}).encode())


def error(status: int, code: str, message: str, user_action: str | None = None, details: Any = None) -> Reply:
    body = {"code": code, "message": message, "details": details, "retry_after": None, "user_action": user_action}
    return Reply(status, json.dumps({"status": "error", "error": body, "meta": {}}).encode())


def frame(event: str, data: dict[str, Any], seq: int | None = None) -> bytes:
    """One event as sse-starlette writes it."""
    lines = [f"event: {event}"] + ([f"id: {seq}"] if seq is not None else []) + [f"data: {json.dumps(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def event(seq: int, event_type: str, **fields: Any) -> tuple[int, str, dict[str, Any]]:
    data = {"type": event_type, "event_id": f"e{seq}", "aggregate_id": "r1", "occurred_at": NOW, **fields}
    return seq, event_type, data


CALL_1 = {"call_id": "c1", "name": "file_read", "arguments": {"path": "tests/test_app.py"}}
CALL_2 = {"call_id": "c2", "name": "shell", "arguments": {"command": "pytest -x"}}
OUTPUT = "\n".join(f"line {n}" for n in range(1, 31))
ANSWER = "The tests pass now: a typo in app.py."
RUN_EVENTS = [
    event(1, "thread_opened", idea="Make the tests pass", kind="agent"),
    event(2, "agent_run_started", task="Make the tests pass", profile="code", profile_reason="named by the user",
          project="demo", tools=["file_read", "shell"], max_iterations=8, timeout_s=900.0),
    event(3, "job_queued", job_id="t1", kind="agent_turn"),
    event(4, "model_turn_completed", job_id="t1", iteration=1, text="Let me look.", tool_calls=[CALL_1, CALL_2]),
    event(5, "tool_call_requested", **CALL_1, job_id="t1", iteration=1, decision="allow", rule="read_only",
          reason="reads only"),
    event(6, "tool_call_dispatched", **CALL_1),
    event(7, "tool_call_started", call_id="c1", name="file_read"),
    event(8, "tool_call_completed", call_id="c1", name="file_read", output=OUTPUT, is_error=False, truncated=True,
          full_output_path=".hermes/out/c1.txt", duration_ms=12.0, exit_code=None),
    event(9, "tool_call_requested", **CALL_2, job_id="t1", iteration=1, decision="ask", rule=None,
          reason="runs a command"),
    event(10, "approval_requested", **CALL_2, approval_id="ap-1", binding="b", reason="shell runs commands",
          expires_at="2026-01-01T10:15:00Z"),
    event(11, "approval_granted", approval_id="ap-1", call_id="c2", binding="b", scope="once", by="ann",
          channel="cli", comment="go"),
    event(12, "tool_call_dispatched", **CALL_2, approval_id="ap-1"),
    event(13, "tool_call_completed", call_id="c2", name="shell", output="1 passed", duration_ms=900.0, exit_code=0),
    event(14, "model_turn_completed", job_id="t2", iteration=2, text=ANSWER, tool_calls=[]),
    event(15, "agent_run_completed", answer=ANSWER, iterations=2, tool_calls=2),
    event(16, "thread_completed", final_draft_number=0, reason="answered"),
]  # fmt: skip
STEP_TYPES = [kind for _, kind, _ in RUN_EVENTS]


@dataclass
class Stream:
    """How ``GET /api/threads/{id}/events`` answers, connection by connection: each one sends the events after
    its ``Last-Event-ID`` up to (and including) the sequence of its ``cuts`` entry, then ends as that entry says:
    ``close`` (a clean end before the thread's), ``break`` (cut mid-chunk: a protocol error), ``hold`` (keeps
    pinging until the client leaves), ``503`` / ``404`` (an error instead of a stream; no events). Past the last
    entry a connection sends everything and holds. ``tokens``: deltas sent (again) on every connection."""

    events: list[tuple[int, str, dict[str, Any]]]
    cuts: list[tuple[int | None, str]] = field(default_factory=list)
    tokens: list[dict[str, Any]] = field(default_factory=list)
    retry_ms: int = 20
    ping_s: float = 0.05
    last_event_ids: list[str | None] = field(default_factory=list)
    """The ``Last-Event-ID`` of each connection, in order."""
    open: int = 0


class StandIn:
    """The gateway's routes the SDK calls, canned; ``requests`` records each one."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.streams: dict[str, Stream] = {}
        self.run_status = "running"
        self.routes: dict[tuple[str, str], Callable[[Recorded], Reply]] = {
            ("POST", "/api/submit"): lambda r: ok(
                {"thread_id": "t1", "status_url": "/api/threads/t1/status", "events_url": "/api/threads/t1/events",
                 "command_id": "cmd-1"}, 202),
            ("POST", "/api/threads/t1/continue"): lambda r: ok(
                {"thread_id": "t1", "answered": [a["question_id"] for a in r.body["answers"]]}, 202),
            ("POST", "/api/threads/t1/rate"): lambda r: ok({"thread_id": "t1", "rating": r.body["rating"]}, 202),
            ("GET", "/api/threads/t1/status"): lambda r: ok(self.thread()),
            ("GET", "/api/threads/nope/status"): lambda r: error(
                404, "thread_not_found", "No thread 'nope'.", user_action="Check the id with `hermes list`."),
            ("GET", "/api/threads"): self.threads,
            ("POST", "/api/threads/t1/jobs/j2/cancel"): lambda r: ok({"thread_id": "t1", "job_id": "j2"}, 202),
            ("GET", "/api/broken"): lambda r: Reply(502, b"<html>Bad gateway</html>", "text/html"),
            ("GET", "/api/odd"): lambda r: Reply(200, b'{"hello": 1}'),
            ("POST", "/api/agent/runs"): self.start_run,
            ("GET", "/api/agent/runs"): lambda r: ok({"runs": [self.run(steps=False)]}),
            ("GET", "/api/agent/runs/r1"): lambda r: ok(self.run()),
            ("GET", "/api/agent/runs/t1"): lambda r: error(404, "not_found", "No agent run 't1'."),
            ("POST", "/api/agent/runs/r1/cancel"): lambda r: ok({"run_id": "r1", "command_id": "cmd-9"}, 202),
            ("POST", "/api/agent/runs/t1/cancel"): lambda r: error(404, "not_found", "No agent run 't1'."),
            ("POST", "/api/agent/runs/done/cancel"): lambda r: error(
                409, "run_ended", "The run has already ended (completed)."),
            ("GET", "/api/agent/profiles"): lambda r: ok({"profiles": [
                {"name": "code", "description": "Write code.", "tools": ["shell"], "max_iterations": 12,
                 "approval_required": [], "timeout_s": 900.0}]}),
            ("GET", "/api/approvals"): self.approvals,
            ("POST", "/api/approvals/ap-1/approve"): lambda r: ok(
                {"approval_id": "ap-1", "decision": "approve", "command_id": "cmd-3"}, 202),
            ("POST", "/api/approvals/ap-1/reject"): lambda r: ok(
                {"approval_id": "ap-1", "decision": "reject", "command_id": "cmd-4"}, 202),
            ("POST", "/api/approvals/ap-3/approve"): lambda r: error(
                409, "approval_closed", "The approval is already granted."),
            ("GET", "/api/tools"): lambda r: ok({"tools": [
                {"name": "shell", "description": "Run a command.", "parameters": {"type": "object"},
                 "read_only": False, "permission": "ask", "server": None},
                {"name": "time__now", "description": "The time.", "parameters": {}, "read_only": True,
                 "permission": "allow", "server": "time"}], "sandbox": None}),
            ("GET", "/api/mcp/servers"): lambda r: ok({"servers": {}, "connected": {}}),
            ("PUT", "/api/mcp/servers/time"): lambda r: ok(
                {"servers": {"time": r.body}, "connected": {"time": ["time__now"]}}),
            ("DELETE", "/api/mcp/servers/time"): lambda r: ok({"servers": {}, "connected": {}}),
            ("DELETE", "/api/mcp/servers/nope"): lambda r: error(404, "not_found", "No MCP server 'nope'."),
        }  # fmt: skip

    def thread(self) -> dict[str, Any]:
        return {
            "thread_id": "t1", "idea": "a balcony garden", "channel": "cli", "user_id": "ann", "origin": {},
            "status": "awaiting_answers", "kind": "idea", "draft1": "Draft one.", "draft2": None,
            "created_at": NOW, "updated_at": NOW, "answerable": True, "ratable": False, "open": True,
            "questions": [{"question_id": "q1", "category": "intent", "text": "For what?", "suggestions": ["food"]}],
            "jobs": [
                {"job_id": "j1", "thread_id": "t1", "kind": "draft1", "status": "completed", "cancellable": False},
                {"job_id": "j2", "thread_id": "t1", "kind": "draft2", "status": "queued", "cancellable": True},
            ],
            "new_field": "kept in raw",
        }  # fmt: skip

    def threads(self, r: Recorded) -> Reply:
        if r.query.get("status") == ["bogus"]:
            details = [{"loc": ["query", "status"], "type": "enum", "message": "Input should be 'drafting'"}]
            return error(422, "validation_failed", "The request is not valid.", details=details)
        return ok({"threads": [self.thread()], "count": 1})

    def start_run(self, r: Recorded) -> Reply:
        if r.body.get("profile") == "nope":
            return error(404, "unknown_profile", "No agent profile 'nope'.", details={"known": ["code"]},
                         user_action="Use GET /api/agent/profiles.")  # fmt: skip
        return ok(
            {"run_id": "r1", "thread_id": "r1", "profile": r.body.get("profile"), "url": "/api/agent/runs/r1",
             "events_url": "/api/threads/r1/events", "command_id": "cmd-2"}, 202)  # fmt: skip

    def run(self, steps: bool = True) -> dict[str, Any]:
        ended = self.run_status == "completed"
        return {
            "run_id": "r1", "user_id": "ann", "task": "Make the tests pass", "profile": "code",
            "profile_reason": "named by the user", "project": "demo", "status": self.run_status,
            "answer": ANSWER if ended else None, "reason": "answered" if ended else None, "message": None,
            "iterations": 2, "tool_calls": 2, "tokens": 321, "cost_cents": 0.5, "created_at": NOW, "updated_at": NOW,
            "steps": [data for _, _, data in RUN_EVENTS[1:]] if steps else [],
            "approvals": [self.approval("ap-1", "granted")] if steps else [],
        }  # fmt: skip

    @staticmethod
    def approval(approval_id: str, status: str) -> dict[str, Any]:
        return {
            "approval_id": approval_id, "run_id": "r1", "user_id": "ann", "call_id": "c2", "tool": "shell",
            "arguments": {"command": "pytest -x"}, "reason": "shell runs commands", "status": status,
            "requested_at": NOW, "expires_at": "2026-01-01T10:15:00Z", "decided_at": None, "decided_by": None,
            "scope": None, "comment": "",
        }  # fmt: skip

    def approvals(self, r: Recorded) -> Reply:
        listing = [self.approval("ap-1", "pending"), self.approval("ap-2", "granted")]
        wanted = r.query.get("status", [None])[0]
        return ok({"approvals": [a for a in listing if wanted in (None, a["status"])]})

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        recorded = Recorded(
            handler.command,
            split.path,
            parse_qs(split.query),
            {k.lower(): v for k, v in handler.headers.items()},
            json.loads(raw) if raw else None,
        )
        self.requests.append(recorded)
        events = re.fullmatch(r"/api/threads/([^/]+)/events", split.path)
        if events and handler.command == "GET":
            self.stream(handler, self.streams[events.group(1)], recorded)
            return
        route = self.routes.get((handler.command, split.path))
        reply = route(recorded) if route else error(404, "not_found", f"No route {split.path}.")
        handler.send_response(reply.status)
        handler.send_header("Content-Type", reply.content_type)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)

    def stream(self, handler: BaseHTTPRequestHandler, stream: Stream, recorded: Recorded) -> None:
        last = recorded.headers.get("last-event-id")
        stream.last_event_ids.append(last)
        connection = len(stream.last_event_ids) - 1
        upto, ending = stream.cuts[connection] if connection < len(stream.cuts) else (None, "hold")
        after = int(last) if last else 0
        if ending in ("503", "404"):
            reply = error(int(ending), "bus_unavailable" if ending == "503" else "thread_not_found", "no")
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
            return
        if after and any(kind == "thread_completed" and seq <= after for seq, kind, _ in stream.events):
            handler.send_response(204)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")  # closed after the stream: not to be reused
        handler.end_headers()
        stream.open += 1

        def chunk(data: bytes) -> None:
            if not data:
                return  # an empty chunk would end the body
            handler.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            handler.wfile.flush()

        try:
            chunk(f": thread r1\r\nretry: {stream.retry_ms}\r\n\r\n".encode())
            chunk(b"".join(frame("token", t) for t in stream.tokens))
            for seq, kind, data in stream.events:
                if seq > after and (upto is None or seq <= upto):
                    chunk(frame(kind, data, seq))
                    chunk(b": ping - 2026-01-01 10:00:00\r\n\r\n")
            if ending == "close":
                handler.wfile.write(b"0\r\n\r\n")
            elif ending == "break":
                handler.wfile.write(b"40\r\nevent: tool_call_st")  # announces 64 bytes, sends 19, then closes
            else:  # hold: keep-alives until the client leaves
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    time.sleep(stream.ping_s)
                    chunk(b": ping\r\n\r\n")
        except OSError:
            pass  # the client left
        finally:
            stream.open -= 1
            handler.wfile.flush()
            handler.close_connection = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no delayed-ACK stall between them

    def _any(self) -> None:
        self.server.stand_in.handle(self)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = _any

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[StandIn, str]]:
    stand_in = StandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.stand_in = stand_in  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield stand_in, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["sync", "async"])
async def client(request, gateway):
    """A :class:`Hermes` or an :class:`AsyncHermes` of the stand-in, with the token (the same tests run on both)."""
    _, url = gateway
    if request.param == "sync":
        with Hermes(url, TOKEN, channel="cli", reconnects=3) as hermes:
            yield hermes
    else:
        async with AsyncHermes(url, TOKEN, channel="cli", reconnects=3) as hermes:
            yield hermes


async def call(client: Hermes | AsyncHermes, method: str, *args: Any, **kwargs: Any) -> Any:
    """``client.method(...)``, awaited for the async client."""
    result = getattr(client, method)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def collect(iterable: Any) -> list[Any]:
    if hasattr(iterable, "__aiter__"):
        return [item async for item in iterable]
    return list(iterable)


# ---- plain calls ----------------------------------------------------------------------------------------------------


async def test_ideas_are_typed_and_every_request_carries_the_token(client, gateway) -> None:
    stand_in, _ = gateway
    submitted = await call(client, "submit", "a balcony garden", 2, project="home", priority=7)
    assert isinstance(submitted, Submitted)
    assert (submitted.thread_id, submitted.events_url, submitted.command_id) == (
        "t1",
        "/api/threads/t1/events",
        "cmd-1",
    )
    assert stand_in.requests[-1].body == {
        "idea": "a balcony garden", "channel": "cli", "max_questions": 2, "project": "home", "priority": 7,
    }  # fmt: skip

    thread = await call(client, "status", "t1")
    assert isinstance(thread, Thread) and thread.status == "awaiting_answers" and thread.answerable
    assert [q.question_id for q in thread.questions] == ["q1"] and thread.questions[0].suggestions == ("food",)
    assert [(j.job_id, j.cancellable) for j in thread.jobs] == [("j1", False), ("j2", True)]
    assert thread.raw["new_field"] == "kept in raw" and thread.final_draft == "Draft one."
    assert thread.created_at is not None and thread.created_at.utcoffset().total_seconds() == 0

    answered = await call(client, "answer", "t1", {"q1": "vegetables"})
    assert isinstance(answered, Accepted) and answered.raw["answered"] == ["q1"]
    assert stand_in.requests[-1].body == {"answers": [{"question_id": "q1", "text": "vegetables"}]}
    await call(client, "answer", "t1", [("q1", "flowers")])
    assert stand_in.requests[-1].body == {"answers": [{"question_id": "q1", "text": "flowers"}]}

    assert (await call(client, "rate", "t1", 4, "useful")).thread_id == "t1"
    assert stand_in.requests[-1].body == {"rating": 4, "comment": "useful"}
    assert [t.thread_id for t in await call(client, "threads", 10, "awaiting_answers")] == ["t1"]
    assert stand_in.requests[-1].query == {"limit": ["10"], "status": ["awaiting_answers"]}

    assert await call(client, "cancel", "t1") == ["j2"]  # only the cancellable job
    assert (stand_in.requests[-1].method, stand_in.requests[-1].path) == ("POST", "/api/threads/t1/jobs/j2/cancel")

    assert {r.headers.get("authorization") for r in stand_in.requests} == {f"Bearer {TOKEN}"}
    assert all(r.headers["user-agent"].startswith("hermes-sdk/") for r in stand_in.requests)


async def test_agent_runs_approvals_and_tools(client, gateway) -> None:
    stand_in, _ = gateway
    started = await call(client, "run_agent", "Make the tests pass", profile="code", project="demo")
    assert isinstance(started, RunStarted)
    assert (started.run_id, started.thread_id, started.profile, started.events_url) == (
        "r1", "r1", "code", "/api/threads/r1/events",
    )  # fmt: skip
    assert stand_in.requests[-1].body == {"task": "Make the tests pass", "project": "demo", "channel": "cli",
                                          "profile": "code"}  # fmt: skip
    await call(client, "run_agent", "Anything")
    assert stand_in.requests[-1].body == {"task": "Anything", "project": "default", "channel": "cli"}

    [listed] = await call(client, "agent_runs", 5)
    assert isinstance(listed, AgentRun) and listed.steps == () and not listed.ended
    assert stand_in.requests[-1].query == {"limit": ["5"]}

    stand_in.run_status = "completed"
    run = await call(client, "agent_run", "r1")
    assert run.ended and run.succeeded and run.answer == ANSWER and run.tokens == 321 and run.cost_cents == 0.5
    assert [s.type for s in run.steps] == STEP_TYPES[1:]
    assert all(s.sequence is None and s.run_id == "r1" for s in run.steps)
    turn = run.steps[2]
    assert isinstance(turn, steps.ModelTurnCompleted)
    assert [(c.call_id, c.name, c.arguments) for c in turn.tool_calls] == [
        ("c1", "file_read", {"path": "tests/test_app.py"}), ("c2", "shell", {"command": "pytest -x"}),
    ]  # fmt: skip
    assert isinstance(run.steps[1], steps.Step) and type(run.steps[1]) is steps.Step  # job_queued: untyped
    [approval] = run.approvals
    assert (approval.approval_id, approval.status, approval.tool, approval.pending) == (
        "ap-1",
        "granted",
        "shell",
        False,
    )

    assert (await call(client, "cancel_run", "r1")).command_id == "cmd-9"
    [profile] = await call(client, "profiles")
    assert (profile.name, profile.tools, profile.max_iterations) == ("code", ("shell",), 12)

    pending = await call(client, "approvals")
    assert [a.approval_id for a in pending] == ["ap-1"] and pending[0].pending
    assert stand_in.requests[-1].query == {"status": ["pending"]}
    assert len(await call(client, "approvals", None)) == 2
    assert stand_in.requests[-1].query == {}

    decided = await call(client, "approve", "ap-1", scope="run", comment="fine")
    assert (decided.approval_id, decided.decision) == ("ap-1", "approve")
    assert stand_in.requests[-1].body == {"comment": "fine", "scope": "run"}
    assert stand_in.requests[-1].headers["x-hermes-channel"] == "cli"
    assert (await call(client, "reject", "ap-1", "no")).decision == "reject"
    assert stand_in.requests[-1].body == {"comment": "no"}

    registry = await call(client, "tools")
    assert [t.name for t in registry] == ["shell", "time__now"] and len(registry) == 2 and registry.sandbox is None
    assert registry.tools[1].server == "time" and registry.tools[1].read_only
    servers = await call(client, "add_mcp_server", "time", command="mcp-server-time", args=["--tz", "UTC"])
    assert stand_in.requests[-1].method == "PUT"
    assert stand_in.requests[-1].body == {"enabled": True, "command": "mcp-server-time", "args": ["--tz", "UTC"]}
    assert servers.connected == {"time": ("time__now",)}
    await call(client, "add_mcp_server", "time", url="https://mcp.example/mcp", headers={"X-Key": "k"})
    assert stand_in.requests[-1].body == {"enabled": True, "url": "https://mcp.example/mcp", "headers": {"X-Key": "k"}}
    with pytest.raises(ValueError):
        await call(client, "add_mcp_server", "time")
    assert (await call(client, "remove_mcp_server", "time")).servers == {}
    assert (await call(client, "mcp_servers")).servers == {}


async def test_errors_map_to_hermes_error_and_hermes_unreachable(client, gateway) -> None:
    with pytest.raises(HermesError) as caught:
        await call(client, "status", "nope")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        404,
        "thread_not_found",
        "No thread 'nope'.",
    )
    assert caught.value.user_action == "Check the id with `hermes list`."

    with pytest.raises(HermesError) as caught:
        await call(client, "threads", 10, "bogus")
    assert caught.value.status == 422 and caught.value.code == "validation_failed"
    assert caught.value.details[0]["loc"] == ["query", "status"]

    with pytest.raises(HermesError) as caught:
        await call(client, "run_agent", "x", profile="nope")
    assert (caught.value.code, caught.value.details) == ("unknown_profile", {"known": ["code"]})

    for method, args, status, code in [
        ("approve", ("ap-3",), 409, "approval_closed"),
        ("cancel_run", ("done",), 409, "run_ended"),
        ("remove_mcp_server", ("nope",), 404, "not_found"),
        ("request", ("GET", "/api/broken"), 502, "bad_response"),  # not an envelope
        ("request", ("GET", "/api/odd"), 200, "bad_response"),  # JSON, but no envelope
    ]:
        with pytest.raises(HermesError) as caught:
            await call(client, method, *args)
        assert (caught.value.status, caught.value.code) == (status, code), method

    nowhere = f"http://127.0.0.1:{free_port()}"
    other = Hermes(nowhere) if isinstance(client, Hermes) else AsyncHermes(nowhere)
    with pytest.raises(HermesUnreachable) as caught:
        await call(other, "agent_runs")
    assert caught.value.url == nowhere and isinstance(caught.value.error, httpx.ConnectError)
    with pytest.raises(HermesUnreachable):
        await collect(other.steps("r1"))  # never connected: no retries
    await call(other, "close" if isinstance(other, Hermes) else "aclose")


async def test_no_token_no_authorization_header(gateway) -> None:
    stand_in, url = gateway
    with Hermes(url) as hermes:
        hermes.agent_runs()
    assert "authorization" not in stand_in.requests[-1].headers


# ---- event streams --------------------------------------------------------------------------------------------------


async def test_steps_resume_with_last_event_id_and_stop_at_the_run_end(client, gateway) -> None:
    stand_in, _ = gateway
    tokens = [{"job_id": "t1", "seq": 0, "text": "Let", "done": False}, {"job_id": "t1", "seq": 1, "text": " me"}]
    stand_in.streams["r1"] = stream = Stream(RUN_EVENTS, cuts=[(5, "close"), (9, "break")], tokens=tokens)
    started = time.monotonic()
    got = await collect(client.steps("r1", tokens=True))
    assert time.monotonic() - started < 5  # did not wait for the held stream after the run's end
    # Three connections: the first ended early (clean), the second broke mid-chunk; each resumed after the last id.
    assert stream.last_event_ids == [None, "5", "9"]
    logged = [s for s in got if not isinstance(s, steps.Token)]
    assert [s.type for s in logged] == STEP_TYPES[:-1]  # each once, in order, up to agent_run_completed
    assert [s.sequence for s in logged] == list(range(1, 16))
    assert [(t.job_id, t.seq, t.text) for t in got if isinstance(t, steps.Token)] == [
        ("t1", 0, "Let"),
        ("t1", 1, " me"),
    ]

    by_type = {s.type: s for s in logged}
    started_step = by_type["agent_run_started"]
    assert isinstance(started_step, steps.AgentRunStarted)
    assert (started_step.profile, started_step.project, started_step.tools) == ("code", "demo", ("file_read", "shell"))
    requested = [s for s in logged if isinstance(s, steps.ToolCallRequested)]
    assert [(s.name, s.decision, s.rule) for s in requested] == [
        ("file_read", "allow", "read_only"),
        ("shell", "ask", None),
    ]
    approval = by_type["approval_requested"]
    assert isinstance(approval, steps.ApprovalRequested) and approval.approval_id == "ap-1"
    assert approval.arguments == {"command": "pytest -x"} and approval.expires_at.minute == 15
    completed = [s for s in logged if isinstance(s, steps.ToolCallCompleted)]
    assert [(s.name, s.truncated, s.exit_code) for s in completed] == [("file_read", True, None), ("shell", False, 0)]
    assert completed[0].full_output_path == ".hermes/out/c1.txt" and completed[0].output == OUTPUT
    end = logged[-1]
    assert isinstance(end, steps.AgentRunCompleted) and end.ends_run and end.answer == ANSWER and end.iterations == 2
    assert not any(s.ends_run for s in logged[:-1])

    # Without tokens; resuming after a sequence; a stream resumed past the thread's end (204) has nothing.
    stand_in.streams["r1"] = Stream(RUN_EVENTS, tokens=tokens)
    later = await collect(client.steps("r1", after=12))
    assert [s.sequence for s in later] == [13, 14, 15]
    stand_in.streams["r1"] = Stream(RUN_EVENTS)
    assert await collect(client.steps("r1", after=16)) == []


async def test_a_stream_gives_up_after_its_reconnections(client, gateway) -> None:
    stand_in, _ = gateway
    # Connected once, then the gateway answers 503 (transient): retried `reconnects` times, then raised.
    stand_in.streams["r1"] = stream = Stream(RUN_EVENTS, cuts=[(3, "close")] + [(None, "503")] * 10)
    with pytest.raises(HermesError) as caught:
        await collect(client.steps("r1"))
    assert caught.value.status == 503 and len(stream.last_event_ids) == 1 + 3
    assert stream.last_event_ids[1:] == ["3", "3", "3"]
    # A 404 on reconnecting is not transient: raised at once.
    stand_in.streams["r1"] = stream = Stream(RUN_EVENTS, cuts=[(3, "close"), (None, "404")])
    with pytest.raises(HermesError) as caught:
        await collect(client.steps("r1"))
    assert caught.value.code == "thread_not_found" and len(stream.last_event_ids) == 2


async def test_thread_events_and_watch(client, gateway) -> None:
    stand_in, _ = gateway
    thread_events = [
        (1, "thread_opened", {"idea": "x"}),
        (2, "draft_presented", {"job_id": "j1", "draft_number": 1, "text": "Draft."}),
        (3, "thread_completed", {"reason": "no_questions"}),
    ]
    stand_in.streams["t1"] = Stream(
        thread_events, cuts=[(2, "break")], tokens=[{"job_id": "j1", "seq": 0, "text": "D"}]
    )
    got = await collect(client.events("t1"))
    assert [(e.event, e.id) for e in got] == [("token", None), ("thread_opened", "1"), ("draft_presented", "2"),
                                             ("thread_completed", "3")]  # fmt: skip
    assert got[2].json()["text"] == "Draft."

    stand_in.streams["t1"] = Stream(thread_events, cuts=[(None, "close")])
    if isinstance(client, Hermes):
        with client.watch("t1") as events:
            raw = list(events)
    else:
        async with client.watch("t1") as events:
            raw = [e async for e in events]
    assert (raw[0].event, raw[0].retry) == ("comment", 20)  # the raw stream: keep-alives included
    assert [e.event for e in raw if e.event != "comment"] == ["thread_opened", "draft_presented", "thread_completed"]

    stand_in.streams["t1"] = Stream(thread_events)
    if isinstance(client, Hermes):
        with client.watch("t1", last_event_id=3) as events:
            assert list(events) == []  # 204: nothing after the end
    else:
        async with client.watch("t1", last_event_id=3) as events:
            assert [e async for e in events] == []


async def test_wait_returns_the_ended_run_or_times_out(client, gateway) -> None:
    stand_in, _ = gateway
    stand_in.streams["r1"] = stream = Stream(RUN_EVENTS[:5])  # then only keep-alives: the run never ends
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await call(client, "wait", "r1", timeout_s=0.6)
    assert 0.5 < time.monotonic() - started < 5

    stand_in.streams["r1"] = stream = Stream(RUN_EVENTS, cuts=[(7, "close")])

    def completes_when_streamed(r: Recorded) -> Reply:
        if len(stream.last_event_ids) == 2:  # the stream was followed to its end
            stand_in.run_status = "completed"
        return ok(stand_in.run())

    stand_in.routes[("GET", "/api/agent/runs/r1")] = completes_when_streamed
    run = await call(client, "wait", "r1", timeout_s=10)
    assert run.succeeded and run.answer == ANSWER and stream.last_event_ids == [None, "7"]
    assert (await call(client, "wait", "r1", timeout_s=1)).succeeded  # ended already: no stream


async def test_a_silent_stream_times_out_at_the_deadline(client, gateway) -> None:
    stand_in, _ = gateway
    stand_in.streams["r1"] = Stream(RUN_EVENTS[:2], ping_s=30)  # two events, then silence
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await collect(client.steps("r1", timeout_s=0.5))
    assert time.monotonic() - started < 3


def test_parse_sse_reads_the_gateway_framing() -> None:
    body = ': thread t\r\nretry: 2000\r\n\r\nevent: token\r\ndata: {"a": 1}\r\n\r\nevent: x\r\nid: 7\r\ndata: l1\r\ndata: l2\r\n\r\n: ping\r\n\r\n'
    events = list(parse_sse(body.replace("\r\n", "\n").split("\n")))
    assert events == [
        SseEvent("comment", "", None, 2000),
        SseEvent("token", '{"a": 1}'),
        SseEvent("x", "l1\nl2", "7"),
        SseEvent("comment", ""),
    ]
    assert steps.parse_step({"type": "something_new", "aggregate_id": "r"}).type == "something_new"


def test_the_cli_names_are_the_sdks() -> None:
    assert cli_client.GatewayError is HermesError and cli_client.GatewayUnreachable is HermesUnreachable
    assert cli_client.SseEvent is SseEvent and cli_client.parse_sse is parse_sse
    assert issubclass(cli_client.GatewayClient, Hermes)
    assert cli_client.GatewayClient("http://127.0.0.1:1").channel == "cli"


# ---- the hermes agent commands --------------------------------------------------------------------------------------


def hermes(url: str, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"HERMES_URL": url, "HERMES_TOKEN": TOKEN, "HERMES_HOME": str(tmp_path), "HERMES_WEB_PORT": ""}
    result = runner.invoke(build_app(), list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_hermes_do_streams_the_run_and_exits_0_when_it_completes(gateway, tmp_path) -> None:
    stand_in, url = gateway
    stand_in.streams["r1"] = Stream(RUN_EVENTS, cuts=[(9, "break")])
    code, out, err = hermes(url, tmp_path, "do", "Make the tests pass", "--profile", "code", "--project", "demo")
    assert code == 0, (out, err)
    assert stand_in.requests[0].body == {"task": "Make the tests pass", "project": "demo", "channel": "cli",
                                         "profile": "code"}  # fmt: skip
    assert "Agent run r1" in out
    assert "Profile: code (named by the user) · project demo" in out
    assert "[turn 1] Let me look." in out
    assert '→ file_read {"path": "tests/test_app.py"}' in out
    assert '→ shell {"command": "pytest -x"}  [needs approval]' in out
    assert "? approval ap-1 for shell: shell runs commands (expires 2026-01-01 10:15 UTC)" in out
    assert "hermes approvals approve ap-1" in out and "hermes approvals reject ap-1" in out
    assert "✓ approved by ann (once): go" in out
    assert "    line 12\n    … 18 more lines\n" in out and "line 13" not in out  # a long output is cut
    assert "all of it in .hermes/out/c1.txt" in out
    assert "← shell (exit 0, 900 ms)\n    1 passed" in out
    assert out.count(ANSWER) == 1 and f"Answer:\n{ANSWER}" in out and "(2 turns, 2 tool calls)" in out
    assert out.index("Let me look.") < out.index("? approval") < out.index("Answer:")  # in order, each once
    assert out.count("→ shell") == 1


def test_hermes_do_exits_1_when_the_run_fails_or_is_cancelled(gateway, tmp_path) -> None:
    stand_in, url = gateway
    failed = RUN_EVENTS[:4] + [
        event(5, "agent_run_failed", reason="max_iterations", message="turn 8 of 8 still asked for tools"),
        event(6, "thread_failed", error_code="max_iterations", message="turn 8 of 8 still asked for tools"),
    ]
    stand_in.streams["r1"] = Stream(failed)
    code, out, err = hermes(url, tmp_path, "do", "loop forever")
    assert code == 1, (out, err)
    assert "run r1 failed: turn 8 of 8 still asked for tools [max_iterations]" in err

    cancelled = RUN_EVENTS[:3] + [event(4, "agent_run_cancelled", reason="user", by="ann"),
                                  event(5, "thread_failed", error_code="cancelled", message="cancelled by ann")]  # fmt: skip
    stand_in.streams["r1"] = Stream(cancelled)
    code, out, err = hermes(url, tmp_path, "do", "anything")
    assert code == 1 and "run r1 was cancelled by ann" in err

    code, out, err = hermes(url, tmp_path, "do", "anything", "--profile", "nope")
    assert code == 1 and "unknown_profile" in err and "GET /api/agent/profiles" in err

    code, out, err = hermes(url, tmp_path, "do", "anything", "--no-follow")
    assert code == 0 and "hermes run r1 --follow" in out


def test_hermes_runs_run_approvals_and_cancel(gateway, tmp_path) -> None:
    stand_in, url = gateway
    code, out, _ = hermes(url, tmp_path, "runs")
    assert code == 0 and "r1" in out and "running" in out and "Make the tests pass" in out

    stand_in.run_status = "completed"
    code, out, _ = hermes(url, tmp_path, "run", "r1")
    assert code == 0 and "Run r1: completed" in out and "2 turns, 2 tool calls, 321 tokens" in out
    assert f"Answer:\n{ANSWER}" in out and "? approval ap-1" in out
    code, out, _ = hermes(url, tmp_path, "run", "r1", "--json")
    assert code == 0 and json.loads(out)["run_id"] == "r1"

    code, out, _ = hermes(url, tmp_path, "approvals")
    assert code == 0 and "ap-1" in out and "ap-2" not in out and "hermes approvals approve ID" in out
    code, out, _ = hermes(url, tmp_path, "approvals", "--status", "all", "--json")
    assert code == 0 and [a["approval_id"] for a in json.loads(out)] == ["ap-1", "ap-2"]

    code, out, _ = hermes(url, tmp_path, "approvals", "approve", "ap-1", "--run", "-m", "fine")
    assert code == 0 and "Approved ap-1 (for this run)." in out
    assert stand_in.requests[-1].body == {"comment": "fine", "scope": "run"}
    code, out, _ = hermes(url, tmp_path, "approvals", "reject", "ap-1", "-m", "no")
    assert code == 0 and "Rejected ap-1." in out and stand_in.requests[-1].body == {"comment": "no"}
    code, _, err = hermes(url, tmp_path, "approvals", "approve", "ap-3")
    assert code == 1 and "approval_closed, HTTP 409" in err

    # `hermes cancel ID`: a run is stopped as a run; a thread's jobs when the id is no run.
    code, out, _ = hermes(url, tmp_path, "cancel", "r1")
    assert code == 0 and "Cancelling agent run r1." in out
    assert (stand_in.requests[-1].method, stand_in.requests[-1].path) == ("POST", "/api/agent/runs/r1/cancel")
    code, out, _ = hermes(url, tmp_path, "cancel", "t1")
    assert code == 0 and "Cancelling job j2 of thread t1." in out
    code, _, err = hermes(url, tmp_path, "cancel", "done")
    assert code == 1 and "run_ended" in err

    code, _, err = hermes(f"http://127.0.0.1:{free_port()}", tmp_path, "approvals")
    assert code == 3 and "cannot reach the Hermes gateway" in err

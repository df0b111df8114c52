"""The model ``hermes-agent`` of the OpenAI-compatible API: an agent run (tools, approvals) behind a chat completion.

The task is the conversation's last user message. Earlier messages (system, user, assistant), when there are any,
follow it in the task's text as context, under the line :data:`CONTEXT_HEADING`, one ``[role] text`` paragraph each,
oldest first (messages after the last user message are ignored); the oldest are left out when the whole would pass
``HERMES_MAX_INPUT_LENGTH`` (the task itself never is: a longer last message is refused, 400 ``input_too_long``).
The profile picker reads the whole text. Each request starts a new run (``StartAgentRun``,
channel ``api``, the caller's user id), which goes through the real bus like ``POST /api/agent/runs``.

Options: ``"metadata": {"profile": "code", "project": "myproj"}`` in the body (OpenAI's ``metadata`` field), else the
headers ``X-Hermes-Agent-Profile`` and ``X-Hermes-Project`` (the latter as for every model). Without a profile the
orchestrator picks one from the task's type (code, fileops, research...); an unknown one is 400 ``unknown_profile``.

The reply is the run's answer as the assistant message. With ``stream: true`` each step is streamed as it happens,
as content chunks: a line naming the run and its profile, the model's text of a turn that calls tools, ``→
tool(args)`` per call, ``← first line of the result…`` per result, per approval asked a line naming the approval id
and how to answer it (the web UI's Approvals page, ``hermes approvals approve|reject <id>``, or ``POST
/api/approvals/<id>/approve``), then how it was answered; then a blank line and the answer, the chunk with
``finish_reason`` ``stop``, the usage chunk (with ``stream_options.include_usage``; the tokens of every model turn)
and ``[DONE]``. While nothing happens (a run waiting for a person), an SSE comment every :data:`HEARTBEAT_S` seconds
keeps the connection alive. A run that fails (a limit: max_iterations, timeout, budget; model_failed) or is cancelled
ends as a failed ``hermes`` thread does: 502 with OpenAI's error object (``code``: the run's reason, e.g.
``max_iterations`` or ``cancelled``), or when streaming an ``error`` event before ``[DONE]``. The gateway waits for
the run's end up to its own wall time (the profile's ``timeout_s``, which the orchestrator enforces) plus a minute,
and at least ``HERMES_CHAT_TIMEOUT_SECONDS``: after that 504 ``timeout`` (the run goes on). A client that goes away
does not stop the run: ``POST /api/agent/runs/<id>/cancel`` does. Headers: ``X-Hermes-Run-Id`` and
``X-Hermes-Thread-Id`` (the run), ``X-Hermes-Session-Id`` (the key, as for every model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from hermes_proto import subjects as subj
from hermes_proto.agent_queries import AgentRunsQuery, ProfilesReply
from hermes_proto.agents import StartAgentRun
from hermes_proto.base import ChatMessage
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import BadReply, BusUnavailable, Refused, ask
from hermes_proto.text import TextRefused, clean_text, normalize_text

from hermes_gateway.live import FeedItem, ThreadFeed

AGENT_MODEL = "hermes-agent"
PROFILE_HEADER = "X-Hermes-Agent-Profile"
RUN_HEADER = "X-Hermes-Run-Id"
CONTEXT_HEADING = "Earlier messages of this conversation (context, oldest first):"
HEARTBEAT_S = 15.0
"""Seconds without a step after which a streamed run sends an SSE comment (``: waiting``)."""
RUN_MARGIN_S = 60.0
"""Seconds the gateway waits past the run's own wall time for its end."""
ARGS_WIDTH = 160
LINE_WIDTH = 160
QUERY_TIMEOUT_S = 5.0
PROFILE = re.compile(r"^[a-z0-9_-]{1,32}$")


class RunEnded(Exception):
    """The run failed or was cancelled: ``code`` its reason (max_iterations, timeout, budget, model_failed,
    cancelled...), ``message`` in words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


# ---- the request -----------------------------------------------------------------------------------------------------


def agent_task(messages: list[ChatMessage], max_length: int) -> str:
    """The run's task: the last user message, then the earlier messages as context (see the module docstring).
    Raises ``TextRefused`` (nothing visible in the last user message) or ``ValueError`` (it is over
    ``max_length``)."""
    last = max(i for i, m in enumerate(messages) if m.role == "user")
    task = clean_text(messages[last].content, "task")
    if len(task) > max_length:
        raise ValueError(f"The last user message is over {max_length} characters (HERMES_MAX_INPUT_LENGTH).")
    earlier = [(m.role, normalize_text(m.content)) for m in messages[:last]]
    kept: list[str] = []
    room = max_length - len(task) - len(CONTEXT_HEADING) - 4
    for role, text in reversed([e for e in earlier if e[1]]):
        paragraph = f"[{role}] {text}"
        if len(paragraph) + 2 > room:
            break
        kept.append(paragraph)
        room -= len(paragraph) + 2
    if not kept:
        return task
    return task + "\n\n" + CONTEXT_HEADING + "\n\n" + "\n\n".join(reversed(kept))


def run_options(request: Request, metadata: dict[str, Any] | None, project: str) -> tuple[str | None, str]:
    """``(profile or None, project)`` from the body's ``metadata``, else the headers (``project``: the route's
    value of ``X-Hermes-Project``). Raises the route's ``OpenAIError`` 400 on a malformed value."""
    from hermes_gateway.routes.openai import PROJECT, OpenAIError

    metadata = metadata or {}
    profile = metadata.get("profile", request.headers.get(PROFILE_HEADER))
    if profile is not None and (not isinstance(profile, str) or not PROFILE.fullmatch(profile)):
        raise OpenAIError(
            400,
            "metadata.profile (or X-Hermes-Agent-Profile) must be 1-32 lowercase letters, digits, '-' or '_'.",
            code="invalid_profile",
            param="metadata.profile",
        )
    project = metadata.get("project", project)
    if not isinstance(project, str) or not PROJECT.fullmatch(project):
        raise OpenAIError(
            400,
            "metadata.project (or X-Hermes-Project) must be 1-64 letters, digits, '-' or '_'.",
            code="invalid_project",
            param="metadata.project",
        )
    return profile, project


async def _check_profile(request: Request, profile: str) -> None:
    from hermes_gateway.routes.openai import OpenAIError

    reply = await ask(
        request.app.state.bus.nc,
        "The orchestrator",
        subj.QUERY_AGENT_PROFILES,
        AgentRunsQuery(),
        ProfilesReply,
        QUERY_TIMEOUT_S,
    )
    known = sorted(p.name for p in reply.profiles)
    if profile not in known:
        raise OpenAIError(
            400,
            f"No agent profile {profile!r} (known: {', '.join(known)}).",
            code="unknown_profile",
            param="metadata.profile",
        )


async def run_agent_turn(
    request: Request,
    stream: bool,
    messages: list[ChatMessage],
    key: str,
    user_id: str,
    project: str,
    metadata: dict[str, Any] | None = None,
    include_usage: bool = False,
):
    """Start a run on the conversation and answer with it in OpenAI's format (``stream``: as SSE chunks). The
    run obeys the same input length and queue cap as ``POST /api/agent/runs``."""
    from hermes_gateway.admission import admitted
    from hermes_gateway.envelope import ApiError
    from hermes_gateway.routes.openai import OpenAIError, completion_body

    state = request.app.state
    try:
        profile, project = run_options(request, metadata, project)
        try:
            task = agent_task(messages, state.settings.hermes_max_input_length)
        except TextRefused as refused:
            code = "empty_task" if refused.reason == "empty" else "invisible_task"
            raise OpenAIError(400, str(refused), code=code, param="messages") from None
        except ValueError as exc:
            raise OpenAIError(400, str(exc), code="input_too_long", param="messages") from None
        if profile is not None:
            await _check_profile(request, profile)
    except OpenAIError as exc:
        return exc.response()
    except (BusUnavailable, BadReply, Refused) as exc:
        return OpenAIError(503, f"Hermes is not answering: {exc}", "api_error", "service_unavailable").response()
    run_id = new_id()
    command = StartAgentRun(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=getattr(request.state, "request_id", None),
        thread_id=run_id,
        task=task,
        profile=profile,
        project=project,
        channel="api",
        user_id=user_id,
        origin={"session_key": key, "model": AGENT_MODEL},
    )
    feed = ThreadFeed(state.bus, run_id, start_after=None)  # from now: the command is not yet sent
    try:
        async with admitted(request, new_jobs=1) as hold:
            await feed.open()
            hold.bind(await state.commands.send(command))
    except ApiError as exc:  # queue_full (429) or queue_unknown (503)
        await feed.close()
        kind = "rate_limit_error" if exc.status_code == 429 else "api_error"
        return OpenAIError(exc.status_code, exc.message, kind, exc.code).response()
    except (BusUnavailable, BadReply) as exc:
        await feed.close()
        return OpenAIError(503, f"Hermes is not answering: {exc}", "api_error", "service_unavailable").response()
    steps = _follow(feed, state.settings.hermes_chat_timeout_seconds)
    chunk_id = f"chatcmpl-{run_id}"
    headers = {"X-Hermes-Session-Id": key, "X-Hermes-Thread-Id": run_id, RUN_HEADER: run_id}
    if stream:
        return StreamingResponse(
            _sse(steps, chunk_id, include_usage),
            media_type="text/event-stream",
            headers={**headers, "Cache-Control": "no-cache"},
        )
    done: Done | None = None
    try:
        async for step in steps:
            if isinstance(step, Done):
                done = step
    except RunEnded as exc:
        return OpenAIError(502, exc.message, "api_error", exc.code).response()
    except TimeoutError:
        return _timeout(run_id).response()
    finally:
        await steps.aclose()
    assert done is not None
    body = completion_body(chunk_id, AGENT_MODEL, f"hermes:agent:{done.profile}", done.answer, "stop", done.usage())
    return JSONResponse(body, headers=headers)


def _timeout(run_id: str):  # noqa: ANN202
    from hermes_gateway.routes.openai import OpenAIError

    return OpenAIError(
        504,
        f"The agent run {run_id} did not end in time; it goes on (GET /api/agent/runs/{run_id}).",
        "api_error",
        "timeout",
    )


# ---- following the run -----------------------------------------------------------------------------------------------


@dataclass
class Done:
    """The run completed: its ``answer``, the profile that ran it, the tokens of all its turns."""

    answer: str
    profile: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class RunSteps:
    """Turns the run's events into text lines (:meth:`lines`) and, at its end, a :class:`Done` (:attr:`done`) or
    :class:`RunEnded`. Pure: no I/O."""

    run_id: str
    profile: str = ""
    timeout_s: float | None = None
    """The run's wall time, once ``agent_run_started`` said it."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    done: Done | None = None
    names: dict[str, str] = field(default_factory=dict)

    def lines(self, event: str, data: dict[str, Any]) -> list[str]:
        """The lines (each ending with a newline) that show ``event``; sets :attr:`done` or raises
        :class:`RunEnded` when it ends the run."""
        if event == "agent_run_started":
            self.profile, self.timeout_s = data.get("profile", ""), data.get("timeout_s")
            return [f"Agent run {self.run_id}: profile {self.profile}, project {data.get('project', 'default')}\n"]
        if event == "model_turn_completed":
            self.prompt_tokens += data.get("prompt_tokens", 0)
            self.completion_tokens += data.get("completion_tokens", 0)
            text = (data.get("text") or "").strip()
            return [text + "\n"] if text and data.get("tool_calls") else []  # without calls: the answer, below
        if event == "tool_call_requested":
            self.names[data["call_id"]] = data["name"]
            ask_ = " [needs approval]" if data.get("decision") == "ask" else ""
            return [f"→ {call_text(data['name'], data.get('arguments') or {})}{ask_}\n"]
        if event == "approval_requested":
            return [approval_text(data["approval_id"], data["name"])]
        if event == "approval_granted":
            return [
                f"✓ approval {data['approval_id']} granted by {data.get('by', '?')} ({data.get('scope', 'once')})\n"
            ]
        if event == "approval_denied":
            comment = f": {data['comment']}" if data.get("comment") else ""
            return [f"✗ approval {data['approval_id']} rejected by {data.get('by', '?')}{comment}\n"]
        if event == "approval_expired":
            return [f"✗ approval {data['approval_id']} expired: the call was not run\n"]
        if event == "tool_call_completed":
            exit_code = data.get("exit_code")
            error = f"error (exit {exit_code}): " if data.get("is_error") and exit_code is not None else ""
            error = error or ("error: " if data.get("is_error") else "")
            return [f"← {error}{first_line(data.get('output') or '')}\n"]
        if event == "tool_call_failed":
            if data.get("error_code") in ("approval_denied", "approval_expired"):  # said by the approval's line
                return []
            return [f"← failed [{data.get('error_code')}]: {first_line(data.get('message') or '')}\n"]
        if event == "agent_run_completed":
            self.done = Done(data.get("answer") or "", self.profile, self.prompt_tokens, self.completion_tokens)
            return []
        if event == "agent_run_failed":
            reason = data.get("reason") or "failed"
            raise RunEnded(reason, f"The agent run failed ({reason}): {data.get('message') or reason}")
        if event == "agent_run_cancelled":
            raise RunEnded("cancelled", f"The agent run was cancelled by {data.get('by') or 'someone'}.")
        if event == "thread_failed":
            code = data.get("error_code") or "failed"
            raise RunEnded(code, f"The agent run failed ({code}): {data.get('message') or code}")
        if event == "thread_completed" and self.done is None:
            self.done = Done("", self.profile, self.prompt_tokens, self.completion_tokens)
        return []


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def call_text(name: str, arguments: dict[str, Any]) -> str:
    """``name(key=value, ...)`` on one line, each value as JSON, the arguments cut to :data:`ARGS_WIDTH`."""
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in arguments.items())
    return f"{name}({clip(args, ARGS_WIDTH)})"


def first_line(output: str) -> str:
    """The first non-blank line of ``output`` cut to :data:`LINE_WIDTH`, with ``…`` when there is more."""
    lines = [line.strip() for line in output.strip().splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return "(no output)"
    line = clip(lines[0], LINE_WIDTH)
    return line + "…" if len(lines) > 1 and not line.endswith("…") else line


def approval_text(approval_id: str, name: str) -> str:
    """The line of an approval asked for (the call's own line, just before, shows its arguments)."""
    return (
        f"⏸ approval {approval_id} is waiting for a person to allow {name}. Answer it on the web UI's Approvals"
        f" page (#approvals), with `hermes approvals approve {approval_id}` (or `reject`), or"
        f" POST /api/approvals/{approval_id}/approve (Telegram shows buttons for runs started there).\n"
    )


async def _follow(feed: ThreadFeed, timeout_s: float) -> AsyncGenerator[str | Done | None, None]:
    """The run's step lines (str), ``None`` after :data:`HEARTBEAT_S` seconds without one, then :class:`Done`.
    Raises :class:`RunEnded`, or ``TimeoutError`` past the deadline (``timeout_s``, or the run's wall time plus
    :data:`RUN_MARGIN_S` when longer). Always closes ``feed``."""
    queue: asyncio.Queue[FeedItem | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for item in feed.items():
                queue.put_nowait(item)
        finally:
            queue.put_nowait(None)

    loop = asyncio.get_running_loop()
    steps = RunSteps(feed.thread_id)
    deadline = loop.time() + timeout_s
    pumping = asyncio.create_task(pump())
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            try:
                item = await asyncio.wait_for(queue.get(), min(remaining, HEARTBEAT_S))
            except TimeoutError:
                yield None
                continue
            if item is None:
                raise RunEnded("interrupted", "The gateway stopped following the run; it may go on.")
            lines = steps.lines(item.event, json.loads(item.data)) if item.event != "token" else []
            if item.event == "agent_run_started" and steps.timeout_s:
                deadline = max(deadline, loop.time() + float(steps.timeout_s) + RUN_MARGIN_S)
            for line in lines:
                yield line
            if steps.done is not None:
                yield steps.done
                return
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pumping
        await feed.close()


async def _sse(
    steps: AsyncGenerator[str | Done | None, None], chunk_id: str, include_usage: bool
) -> AsyncIterator[str]:
    """The chunk stream of :func:`hermes_gateway.routes.openai._sse` with the run's steps as content: role, one
    chunk per step line, the answer, ``finish_reason`` ``stop``, the usage chunk (``include_usage``), ``[DONE]``."""
    from hermes_gateway.routes.openai import OpenAIError, chunk, error_event, usage_chunk

    created = int(time.time())
    extra = {"usage": None} if include_usage else None
    yield chunk(chunk_id, AGENT_MODEL, {"role": "assistant", "content": ""}, None, extra, created)
    said = False
    try:
        async for step in steps:
            if step is None:
                yield ": waiting\n\n"
            elif isinstance(step, str):
                said = True
                yield chunk(chunk_id, AGENT_MODEL, {"content": step}, None, extra, created)
            else:
                answer = ("\n" if said else "") + step.answer
                if answer:
                    yield chunk(chunk_id, AGENT_MODEL, {"content": answer}, None, extra, created)
                yield chunk(chunk_id, AGENT_MODEL, {}, "stop", extra, created)
                if include_usage:
                    yield usage_chunk(chunk_id, AGENT_MODEL, created, step.usage())
    except RunEnded as exc:
        yield error_event(OpenAIError(502, exc.message, "api_error", exc.code))
    except TimeoutError:
        yield error_event(_timeout(chunk_id.removeprefix("chatcmpl-")))
    finally:
        await steps.aclose()  # also when the client went away: the feed is left at once
    yield "data: [DONE]\n\n"

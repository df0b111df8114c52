"""What :class:`~hermes_sdk.Hermes` and :class:`~hermes_sdk.AsyncHermes` share: each endpoint as a :class:`Call`
(method, path, query, body and how to read the answer), the envelope's unwrapping, and :class:`Follow`, the state
of a reconnecting event stream. No I/O here: the two clients only send the calls and read the streams."""

from __future__ import annotations

import json as jsonlib
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from hermes_sdk import _convert as c
from hermes_sdk.errors import HermesError, HermesUnreachable
from hermes_sdk.models import (
    Accepted,
    AgentRun,
    Approval,
    Decided,
    McpServers,
    Profile,
    RunStarted,
    Submitted,
    Thread,
    ToolRegistry,
)
from hermes_sdk.sse import SseEvent
from hermes_sdk.steps import RUN_END_TYPES, Step, parse_step

T = TypeVar("T")

VERSION = "0.1.0"
USER_AGENT = f"hermes-sdk/{VERSION}"
DEFAULT_URL = "http://127.0.0.1:5000"
DEFAULT_TIMEOUT_S = 15.0
STREAM_CONNECT_S = 10.0
STREAM_READ_S = 60.0
"""A stream's read timeout: the gateway sends a keep-alive every 10 s, so a minute of silence is a lost connection."""
DEFAULT_RETRY_S = 2.0
MAX_RETRY_S = 30.0
DEFAULT_RECONNECTS = 10
THREAD_END_TYPES = frozenset({"thread_completed", "thread_failed"})
TRANSIENT_STATUSES = frozenset({502, 503, 504})
WAIT_POLL_S = 0.2
"""How often :meth:`~hermes_sdk.Hermes.wait` reads a run whose stream ended until the read model shows its end."""


def headers_for(token: str | None) -> dict[str, str]:
    """Every request's headers: the user agent and, with a token, ``Authorization: Bearer <token>``."""
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def env_settings() -> tuple[str, str | None]:
    """``(base_url, token)`` from ``$HERMES_URL`` (else ``http://127.0.0.1:${HERMES_WEB_PORT:-5000}``) and
    ``$HERMES_TOKEN``."""
    url = os.environ.get("HERMES_URL") or f"http://127.0.0.1:{os.environ.get('HERMES_WEB_PORT') or 5000}"
    return url, os.environ.get("HERMES_TOKEN") or None


def segment(value: str) -> str:
    """``value`` as one path segment (an id cannot reach another route)."""
    return quote(str(value), safe="")


def unwrap(response: httpx.Response) -> Any:
    """The ``data`` of a success envelope; raises :class:`HermesError` for an error envelope or a body that is not
    an envelope (``code`` ``bad_response``)."""
    try:
        body = response.json()
    except ValueError:
        raise HermesError(
            response.status_code,
            "bad_response",
            f"HTTP {response.status_code} without a JSON envelope: {response.text[:200]!r}",
        ) from None
    if isinstance(body, dict) and body.get("status") == "success":
        return body.get("data")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise HermesError(response.status_code, "bad_response", f"HTTP {response.status_code}: unexpected body")
    raise HermesError(
        response.status_code,
        str(error.get("code", "unknown")),
        str(error.get("message", "")),
        error.get("user_action"),
        error.get("details"),
    )


def data_of(value: Any) -> dict[str, Any]:
    """A success's ``data`` as an object (``bad_response`` when it is not one)."""
    if not isinstance(value, dict):
        raise HermesError(200, "bad_response", f"expected a JSON object, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request and how to read its ``data``."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] | None = None


def _one(cls: Any) -> Callable[[Any], Any]:
    return lambda data: cls.from_json(data_of(data))


def _many(cls: Any, key: str) -> Callable[[Any], Any]:
    return lambda data: [cls.from_json(item) for item in c.objs(data_of(data).get(key))]


def _present(**values: Any) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# ---- ideas ----------------------------------------------------------------------------------------------------------


def submit(
    idea: str,
    max_questions: int | None,
    channel: str,
    project: str | None,
    private: bool | None,
    priority: int | None,
) -> Call[Submitted]:
    body = {"idea": idea, "channel": channel}
    body.update(_present(max_questions=max_questions, project=project, private=private, priority=priority))
    return Call("POST", "/api/submit", _one(Submitted), json=body)


def answer_pairs(answers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    pairs = answers.items() if isinstance(answers, Mapping) else answers
    return [{"question_id": question_id, "text": text} for question_id, text in pairs]


def answer(thread_id: str, answers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Call[Accepted]:
    body = {"answers": answer_pairs(answers)}
    return Call("POST", f"/api/threads/{segment(thread_id)}/continue", _one(Accepted), json=body)


def rate(thread_id: str, rating: int, comment: str) -> Call[Accepted]:
    body = {"rating": rating, "comment": comment}
    return Call("POST", f"/api/threads/{segment(thread_id)}/rate", _one(Accepted), json=body)


def status(thread_id: str) -> Call[Thread]:
    return Call("GET", f"/api/threads/{segment(thread_id)}/status", _one(Thread))


def threads(limit: int, status: str | None) -> Call[list[Thread]]:
    return Call("GET", "/api/threads", _many(Thread, "threads"), params=_present(limit=limit, status=status))


def cancel_job(thread_id: str, job_id: str) -> Call[Accepted]:
    return Call("POST", f"/api/threads/{segment(thread_id)}/jobs/{segment(job_id)}/cancel", _one(Accepted))


# ---- agent runs and approvals ---------------------------------------------------------------------------------------


def run_agent(task: str, profile: str | None, project: str, channel: str) -> Call[RunStarted]:
    body = {"task": task, "project": project, "channel": channel, **_present(profile=profile)}
    return Call("POST", "/api/agent/runs", _one(RunStarted), json=body)


def agent_runs(limit: int) -> Call[list[AgentRun]]:
    return Call("GET", "/api/agent/runs", _many(AgentRun, "runs"), params={"limit": limit})


def agent_run(run_id: str) -> Call[AgentRun]:
    return Call("GET", f"/api/agent/runs/{segment(run_id)}", _one(AgentRun))


def cancel_run(run_id: str) -> Call[Accepted]:
    return Call("POST", f"/api/agent/runs/{segment(run_id)}/cancel", _one(Accepted))


def profiles() -> Call[list[Profile]]:
    return Call("GET", "/api/agent/profiles", _many(Profile, "profiles"))


def approvals(status: str | None, run_id: str | None) -> Call[list[Approval]]:
    params = _present(status=status, run_id=run_id)
    return Call("GET", "/api/approvals", _many(Approval, "approvals"), params=params)


def decide(approval_id: str, decision: str, scope: str, comment: str, channel: str) -> Call[Decided]:
    body: dict[str, Any] = {"comment": comment}
    if decision == "approve":
        body["scope"] = scope
    path = f"/api/approvals/{segment(approval_id)}/{decision}"
    return Call("POST", path, _one(Decided), json=body, headers={"X-Hermes-Channel": channel})


# ---- tools ----------------------------------------------------------------------------------------------------------


def tools() -> Call[ToolRegistry]:
    return Call("GET", "/api/tools", _one(ToolRegistry))


def mcp_servers() -> Call[McpServers]:
    return Call("GET", "/api/mcp/servers", _one(McpServers))


def add_mcp_server(
    name: str,
    command: str | list[str] | None,
    url: str | None,
    args: Iterable[str],
    env: Mapping[str, str] | None,
    cwd: str | None,
    headers: Mapping[str, str] | None,
    enabled: bool,
) -> Call[McpServers]:
    if (command is None) == (url is None):
        raise ValueError("an MCP server has either a command (stdio) or a url (streamable HTTP)")
    body: dict[str, Any] = {"enabled": enabled}
    if command is not None:
        body.update(command=list(command) if not isinstance(command, str) else command, args=list(args))
        body.update(_present(env=dict(env) if env else None, cwd=cwd))
    else:
        body.update(url=url, **_present(headers=dict(headers) if headers else None))
    return Call("PUT", f"/api/mcp/servers/{segment(name)}", _one(McpServers), json=body)


def remove_mcp_server(name: str) -> Call[McpServers]:
    return Call("DELETE", f"/api/mcp/servers/{segment(name)}", _one(McpServers))


# ---- event streams --------------------------------------------------------------------------------------------------


def events_path(thread_id: str) -> str:
    return f"/api/threads/{segment(thread_id)}/events"


def stream_headers(last_event_id: int | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    return headers


def stream_timeout(read_s: float = STREAM_READ_S) -> httpx.Timeout:
    return httpx.Timeout(STREAM_CONNECT_S, read=read_s)


class StreamEndedEarly(ConnectionError):
    """The gateway closed an event stream before the thread (or run) ended (e.g. it is shutting down)."""


class Follow:
    """The state of one reconnecting event stream of thread ``thread_id``: the last sequence received (sent as
    ``Last-Event-ID`` on a reconnection), the server's ``retry`` delay, the deadline (``timeout_s`` from now;
    None: none), the token deltas already given (a reconnection replays the kept ones), and whether the event
    that ends it (one of ``until``) has come. The clients' loops ask it what to send and what to give."""

    def __init__(
        self,
        thread_id: str,
        after: int | None,
        timeout_s: float | None,
        tokens: bool,
        until: frozenset[str],
        reconnects: int,
    ) -> None:
        self.path = events_path(thread_id)
        self.last_id = after
        self.deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        self.tokens = tokens
        self.until = until
        self.reconnects = reconnects
        self.retry_s = DEFAULT_RETRY_S
        self.ended = False
        self.connected = False
        self.failures = 0
        self._tokens_seen: set[tuple[str, int]] = set()

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check_deadline(self) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise TimeoutError(f"the events of {self.path} did not end in time")

    def headers(self) -> dict[str, str]:
        return stream_headers(self.last_id)

    def timeout(self) -> httpx.Timeout:
        """The next connection's timeouts: reads end at the deadline (checked again on a timeout)."""
        self.check_deadline()
        remaining = self.remaining()
        return stream_timeout(STREAM_READ_S if remaining is None else max(0.05, min(STREAM_READ_S, remaining)))

    def opened(self) -> None:
        self.connected = True

    def take(self, sse: SseEvent) -> bool:
        """Record ``sse``; whether to give it (not a keep-alive, not a duplicate, not an unwanted token)."""
        if sse.retry is not None:
            self.retry_s = min(max(sse.retry / 1000, 0.0), MAX_RETRY_S)
        if sse.event == "comment":
            return False
        if sse.id is not None and sse.id.isdigit():
            sequence = int(sse.id)
            if self.last_id is not None and sequence <= self.last_id:
                return False
            self.last_id = sequence
            self.failures = 0  # progress: the connection worked
        elif sse.event == "token":
            if not self.tokens:
                return False
            try:
                delta = sse.json()
                key = (str(delta.get("job_id")), int(delta.get("seq")))
            except (ValueError, TypeError, AttributeError):
                return True
            if key in self._tokens_seen:
                return False
            self._tokens_seen.add(key)
        if sse.event in self.until:
            self.ended = True
        return True

    def transient(self, error: HermesError) -> bool:
        """A gateway error worth reconnecting after (the gateway or its bus is restarting), once connected."""
        return self.connected and error.status in TRANSIENT_STATUSES

    def retry_after(self, error: Exception, base_url: str) -> float:
        """After a lost (or refused) connection: the seconds to wait before reconnecting. Raises
        :class:`TimeoutError` past the deadline, :class:`HermesUnreachable` (or the gateway's error) when it never
        connected or failed ``reconnects`` times in a row without receiving anything."""
        self.check_deadline()
        self.failures += 1
        if not self.connected or self.failures > self.reconnects:
            if isinstance(error, HermesError):
                raise error
            raise HermesUnreachable(base_url, error) from error
        remaining = self.remaining()
        return self.retry_s if remaining is None else max(0.0, min(self.retry_s, remaining))


def follow_run(run_id: str, after: int | None, timeout_s: float | None, tokens: bool, reconnects: int) -> Follow:
    return Follow(run_id, after, timeout_s, tokens, RUN_END_TYPES, reconnects)


def follow_thread(thread_id: str, after: int | None, timeout_s: float | None, tokens: bool, reconnects: int) -> Follow:
    return Follow(thread_id, after, timeout_s, tokens, THREAD_END_TYPES, reconnects)


def step_of(sse: SseEvent) -> Step:
    """The typed step of one event of a run's stream."""
    try:
        data = jsonlib.loads(sse.data)
    except ValueError:
        data = None
    sequence = int(sse.id) if sse.id is not None and sse.id.isdigit() else None
    return parse_step(data if isinstance(data, dict) else {}, sse.event, sequence)


def bad_stream_status(response: httpx.Response) -> HermesError:
    """The error of an event stream answered with neither 200 nor 204 (after :func:`unwrap` found no envelope
    error)."""
    return HermesError(response.status_code, "bad_response", f"HTTP {response.status_code} for an event stream")

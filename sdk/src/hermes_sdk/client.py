""":class:`Hermes`: the synchronous client (:mod:`httpx`). :class:`~hermes_sdk.AsyncHermes` has the same methods,
awaited."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx

from hermes_sdk import _api as api
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
from hermes_sdk.sse import SseEvent, parse_sse
from hermes_sdk.steps import Step

T = TypeVar("T")


class Hermes:
    """The Hermes gateway at ``base_url``, synchronously.

    ``token``: sent as ``Authorization: Bearer <token>`` on every request (None: no header, for a gateway with
    auth off); ``timeout_s`` bounds each plain request (seconds); ``channel`` is the channel ideas and runs are
    submitted on and approvals answered from (``api``, ``cli``...); ``reconnects``: how many times in a row an
    event stream (:meth:`steps`, :meth:`events`) reconnects without receiving anything before it gives up;
    ``transport``: an :mod:`httpx` transport (tests, proxies). Use it as a context manager, or :meth:`close` it.

    Every method returns a typed, frozen result (:mod:`hermes_sdk.models`, :mod:`hermes_sdk.steps`) and raises
    :class:`~hermes_sdk.HermesError` when the gateway answers an error, :class:`~hermes_sdk.HermesUnreachable`
    when it does not answer."""

    def __init__(
        self,
        base_url: str = api.DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = api.DEFAULT_TIMEOUT_S,
        channel: str = "api",
        reconnects: int = api.DEFAULT_RECONNECTS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self.reconnects = reconnects
        self._timeout_s = timeout_s
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout_s, headers=api.headers_for(token), transport=transport
        )

    @classmethod
    def from_env(cls, **options: Any) -> Hermes:
        """A client of ``$HERMES_URL`` (else ``http://127.0.0.1:${HERMES_WEB_PORT:-5000}``) with ``$HERMES_TOKEN``;
        ``options`` as for the constructor."""
        url, token = api.env_settings()
        return cls(url, token, **options)

    @property
    def http(self) -> httpx.Client:
        """The underlying :class:`httpx.Client` (base URL and token set), for what this SDK does not cover."""
        return self._http

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Hermes:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> Any:
        """Any gateway route: ``method`` ``path`` (``/api/...``); returns the success envelope's ``data`` as decoded
        JSON. ``timeout`` None: the client's."""
        options: dict[str, Any] = {"params": params, "json": json, "headers": headers}
        if timeout is not None:
            options["timeout"] = timeout
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise HermesUnreachable(self.base_url, exc) from exc
        return api.unwrap(response)

    def _do(self, call: api.Call[T]) -> T:
        return call.parse(
            self.request(call.method, call.path, params=call.params, json=call.json, headers=call.headers)
        )

    # ---- ideas ------------------------------------------------------------------------------------------------------

    def submit(
        self,
        idea: str,
        max_questions: int | None = None,
        *,
        project: str | None = None,
        private: bool | None = None,
        priority: int | None = None,
    ) -> Submitted:
        """Submit an idea (``POST /api/submit``): a thread drafts it, asks up to ``max_questions`` clarifying
        questions (None: the orchestrator's default), then refines it with the answers. ``project``: the budget scope;
        ``private``: keep every model call on local backends; ``priority``: 1-10 (None: the gateway's defaults).
        Watch it with :meth:`events` or :meth:`watch`, read it with :meth:`status`. Errors: 400 ``empty_idea``,
        413 ``idea_too_long``, 422 ``validation_failed``, 429 ``queue_full``."""
        return self._do(api.submit(idea, max_questions, self.channel, project, private, priority))

    def answer(self, thread_id: str, answers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Accepted:
        """Answer a thread's questions (``POST /api/threads/{id}/continue``): ``{question_id: text}`` or
        ``(question_id, text)`` pairs; an empty text leaves a question unanswered. Errors: 409
        ``not_awaiting_answers``, 400 ``unknown_question`` / ``no_answers``."""
        return self._do(api.answer(thread_id, answers))

    def rate(self, thread_id: str, rating: int, comment: str = "") -> Accepted:
        """Rate a completed thread's final draft 1-5 (``POST /api/threads/{id}/rate``). Errors: 409
        ``not_completed``."""
        return self._do(api.rate(thread_id, rating, comment))

    def status(self, thread_id: str) -> Thread:
        """The thread now (``GET /api/threads/{id}/status``): status, questions, jobs, drafts. A run is a thread
        too (``kind`` agent). Errors: 404 ``thread_not_found``."""
        return self._do(api.status(thread_id))

    def threads(self, limit: int = 50, status: str | None = None) -> list[Thread]:
        """The most recent threads, newest first (at most ``limit``, 1-200); with ``status``, only those of the
        newest 200 in that status (an unknown one: 422 ``validation_failed``, its ``details`` naming them)."""
        return self._do(api.threads(limit, status))

    def cancel(self, thread_id: str, job_id: str | None = None) -> list[str]:
        """Stop job ``job_id`` of the thread (None: every job of it that has not ended); returns the ids of the jobs
        asked to stop (a queued job never runs, a running model call stops at its edge). Errors: 409
        ``job_not_cancellable``, 404 ``job_not_found``. To stop an agent run, see :meth:`cancel_run`."""
        jobs = [job_id] if job_id else [job.job_id for job in self.status(thread_id).jobs if job.cancellable]
        for job in jobs:
            self._do(api.cancel_job(thread_id, job))
        return jobs

    @contextmanager
    def watch(self, thread_id: str, last_event_id: int | None = None) -> Iterator[Iterator[SseEvent]]:
        """One connection to ``GET /api/threads/{id}/events``: yields the raw event iterator once the gateway has
        subscribed (so nothing published afterwards is missed: open it, then answer). It gives every event,
        keep-alives (``comment``) and tokens included, and ends when the thread ends (at once on 204: nothing after
        ``last_event_id``) or the connection does; it does not reconnect (:meth:`events` does)."""
        try:
            with self._http.stream(
                "GET",
                api.events_path(thread_id),
                headers=api.stream_headers(last_event_id),
                timeout=api.stream_timeout(),
            ) as response:
                if response.status_code == 204:
                    yield iter(())
                    return
                if response.status_code != 200:
                    response.read()
                    api.unwrap(response)
                    raise api.bad_stream_status(response)
                yield parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise HermesUnreachable(self.base_url, exc) from exc

    def _follow(self, follow: api.Follow) -> Iterator[SseEvent]:
        """The events of ``follow``'s stream across reconnections (``Last-Event-ID``), until its end."""
        while True:
            error: Exception
            try:
                with self._http.stream("GET", follow.path, headers=follow.headers(), timeout=follow.timeout()) as r:
                    if r.status_code == 204:
                        return
                    if r.status_code != 200:
                        r.read()
                        api.unwrap(r)
                        raise api.bad_stream_status(r)
                    follow.opened()
                    for sse in parse_sse(r.iter_lines()):
                        if follow.take(sse):
                            yield sse
                        if follow.ended:
                            return
                        follow.check_deadline()
                error = api.StreamEndedEarly("the gateway closed the event stream before its end")
            except httpx.TransportError as exc:
                error = exc
            except HermesError as exc:
                if not follow.transient(exc):
                    raise
                error = exc
            time.sleep(follow.retry_after(error, self.base_url))

    def events(
        self, thread_id: str, *, after: int | None = None, tokens: bool = True, timeout_s: float | None = None
    ) -> Iterator[SseEvent]:
        """The thread's events (log events and, with ``tokens``, its token deltas) from the start (or after
        sequence ``after``) until it ends (``thread_completed`` / ``thread_failed``, given), reconnecting with
        ``Last-Event-ID`` when the connection is lost. Raises :class:`TimeoutError` after ``timeout_s`` seconds."""
        yield from self._follow(api.follow_thread(thread_id, after, timeout_s, tokens, self.reconnects))

    # ---- agent runs -------------------------------------------------------------------------------------------------

    def run_agent(self, task: str, profile: str | None = None, project: str = "default") -> RunStarted:
        """Start an agent run on ``task`` (``POST /api/agent/runs``): ``profile`` (see :meth:`profiles`; None: one
        is picked from the task), ``project`` its workspace. Follow it with :meth:`steps`, or :meth:`wait` for it.
        Errors: 404 ``unknown_profile``, 400 ``empty_idea``, 413 ``idea_too_long``, 429 ``queue_full``."""
        return self._do(api.run_agent(task, profile, project, self.channel))

    def agent_runs(self, limit: int = 50) -> list[AgentRun]:
        """The most recent runs, newest first (without their steps)."""
        return self._do(api.agent_runs(limit))

    def agent_run(self, run_id: str) -> AgentRun:
        """One run with its ``steps`` and ``approvals``. Errors: 404 ``not_found``."""
        return self._do(api.agent_run(run_id))

    def cancel_run(self, run_id: str) -> Accepted:
        """Stop a run and its running tool call; it ends with :class:`~hermes_sdk.steps.AgentRunCancelled`.
        Errors: 404 ``not_found``, 409 ``run_ended``."""
        return self._do(api.cancel_run(run_id))

    def profiles(self) -> list[Profile]:
        """The agent profiles a run may use."""
        return self._do(api.profiles())

    def steps(
        self, run_id: str, *, after: int | None = None, tokens: bool = False, timeout_s: float | None = None
    ) -> Iterator[Step]:
        """The run's steps as they happen (from its start, or after sequence ``after``), each a typed
        :class:`~hermes_sdk.steps.Step`; ends after the step that ends the run (``step.ends_run``). A lost
        connection is resumed with ``Last-Event-ID`` (nothing missed, nothing twice). ``tokens``: also the model's
        text as it streams (:class:`~hermes_sdk.steps.Token`). Raises :class:`TimeoutError` after ``timeout_s``
        seconds (the run goes on), :class:`~hermes_sdk.HermesUnreachable` when the gateway stays away."""
        for sse in self._follow(api.follow_run(run_id, after, timeout_s, tokens, self.reconnects)):
            yield api.step_of(sse)

    def wait(self, run_id: str, timeout_s: float = 600.0) -> AgentRun:
        """Wait until the run ends and return it (``status`` completed, failed or cancelled; ``answer``). Raises
        :class:`TimeoutError` after ``timeout_s`` seconds (the run goes on)."""
        deadline = time.monotonic() + timeout_s
        run = self.agent_run(run_id)
        if run.ended:
            return run
        for _ in self.steps(run_id, timeout_s=max(0.0, deadline - time.monotonic())):
            pass
        while True:  # the stream ended: the read model follows (the gateway waits for what it delivered)
            run = self.agent_run(run_id)
            if run.ended:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"agent run {run_id} did not end within {timeout_s:g} s")
            time.sleep(api.WAIT_POLL_S)

    # ---- approvals --------------------------------------------------------------------------------------------------

    def approvals(self, status: str | None = "pending", run_id: str | None = None) -> list[Approval]:
        """Approvals, newest first: ``status`` pending (default), granted, denied, expired, or None for all;
        ``run_id``: only that run's. While auth is on, only the caller's."""
        return self._do(api.approvals(status, run_id))

    def approve(self, approval_id: str, scope: str = "once", comment: str = "") -> Decided:
        """Approve the call: ``scope`` ``once`` (this call) or ``run`` (also the same call again in this run).
        Errors: 404 ``not_found``, 409 ``approval_closed`` (already answered or expired), 403 for a guest."""
        return self._do(api.decide(approval_id, "approve", scope, comment, self.channel))

    def reject(self, approval_id: str, comment: str = "") -> Decided:
        """Reject the call; the model is told (with ``comment``). Errors as :meth:`approve`."""
        return self._do(api.decide(approval_id, "reject", "once", comment, self.channel))

    # ---- tools ------------------------------------------------------------------------------------------------------

    def tools(self) -> ToolRegistry:
        """Every tool an agent may be granted (built in and from MCP servers), and whether the sandbox works."""
        return self._do(api.tools())

    def mcp_servers(self) -> McpServers:
        """The configured MCP servers and the tools of those connected (admin only)."""
        return self._do(api.mcp_servers())

    def add_mcp_server(
        self,
        name: str,
        command: str | list[str] | None = None,
        url: str | None = None,
        *,
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        headers: Mapping[str, str] | None = None,
        enabled: bool = True,
    ) -> McpServers:
        """Add (or replace) MCP server ``name`` (1-32 letters, digits or '-'): a ``command`` (with ``args``,
        ``env``, ``cwd``) run over stdio, or a streamable-HTTP ``url`` (with ``headers``). Takes effect without a
        restart. Errors: 400 ``invalid_mcp_server``; 403 unless admin. Raises :class:`ValueError` unless exactly
        one of ``command`` and ``url`` is given."""
        return self._do(api.add_mcp_server(name, command, url, args, env, cwd, headers, enabled))

    def remove_mcp_server(self, name: str) -> McpServers:
        """Remove MCP server ``name``: its tools leave the registry at once. Errors: 404 ``not_found``."""
        return self._do(api.remove_mcp_server(name))

""":class:`AsyncHermes`: the asynchronous client (:mod:`httpx`, asyncio). Every method is the one of
:class:`~hermes_sdk.Hermes` of the same name, awaited; :meth:`AsyncHermes.steps` and :meth:`AsyncHermes.events`
are async iterators, :meth:`AsyncHermes.watch` an async context manager. Close an iterator you leave early
(``contextlib.aclosing``) to end its connection at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
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
from hermes_sdk.sse import SseEvent, aparse_sse
from hermes_sdk.steps import Step

T = TypeVar("T")


async def _empty() -> AsyncIterator[SseEvent]:
    return
    yield  # pragma: no cover


class AsyncHermes:
    """The Hermes gateway at ``base_url``, asynchronously; the options are those of :class:`~hermes_sdk.Hermes`
    (``transport``: an :class:`httpx.AsyncBaseTransport`). Use it as an async context manager, or
    :meth:`aclose` it."""

    def __init__(
        self,
        base_url: str = api.DEFAULT_URL,
        token: str | None = None,
        *,
        timeout_s: float = api.DEFAULT_TIMEOUT_S,
        channel: str = "api",
        reconnects: int = api.DEFAULT_RECONNECTS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.channel = channel
        self.reconnects = reconnects
        self._timeout_s = timeout_s
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, headers=api.headers_for(token), transport=transport
        )

    @classmethod
    def from_env(cls, **options: Any) -> AsyncHermes:
        """As :meth:`Hermes.from_env <hermes_sdk.Hermes.from_env>`."""
        url, token = api.env_settings()
        return cls(url, token, **options)

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying :class:`httpx.AsyncClient` (base URL and token set)."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncHermes:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    # ---- plumbing ---------------------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
    ) -> Any:
        """Any gateway route; returns the success envelope's ``data`` (as :meth:`Hermes.request
        <hermes_sdk.Hermes.request>`)."""
        options: dict[str, Any] = {"params": params, "json": json, "headers": headers}
        if timeout is not None:
            options["timeout"] = timeout
        try:
            response = await self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise HermesUnreachable(self.base_url, exc) from exc
        return api.unwrap(response)

    async def _do(self, call: api.Call[T]) -> T:
        data = await self.request(call.method, call.path, params=call.params, json=call.json, headers=call.headers)
        return call.parse(data)

    # ---- ideas ------------------------------------------------------------------------------------------------------

    async def submit(
        self,
        idea: str,
        max_questions: int | None = None,
        *,
        project: str | None = None,
        private: bool | None = None,
        priority: int | None = None,
    ) -> Submitted:
        """Submit an idea (:meth:`Hermes.submit <hermes_sdk.Hermes.submit>`)."""
        return await self._do(api.submit(idea, max_questions, self.channel, project, private, priority))

    async def answer(self, thread_id: str, answers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Accepted:
        """Answer a thread's questions (:meth:`Hermes.answer <hermes_sdk.Hermes.answer>`)."""
        return await self._do(api.answer(thread_id, answers))

    async def rate(self, thread_id: str, rating: int, comment: str = "") -> Accepted:
        """Rate a completed thread (:meth:`Hermes.rate <hermes_sdk.Hermes.rate>`)."""
        return await self._do(api.rate(thread_id, rating, comment))

    async def status(self, thread_id: str) -> Thread:
        """The thread now (:meth:`Hermes.status <hermes_sdk.Hermes.status>`)."""
        return await self._do(api.status(thread_id))

    async def threads(self, limit: int = 50, status: str | None = None) -> list[Thread]:
        """The most recent threads (:meth:`Hermes.threads <hermes_sdk.Hermes.threads>`)."""
        return await self._do(api.threads(limit, status))

    async def cancel(self, thread_id: str, job_id: str | None = None) -> list[str]:
        """Stop a thread's job(s) (:meth:`Hermes.cancel <hermes_sdk.Hermes.cancel>`)."""
        if job_id:
            jobs = [job_id]
        else:
            jobs = [job.job_id for job in (await self.status(thread_id)).jobs if job.cancellable]
        for job in jobs:
            await self._do(api.cancel_job(thread_id, job))
        return jobs

    @asynccontextmanager
    async def watch(self, thread_id: str, last_event_id: int | None = None) -> AsyncIterator[AsyncIterator[SseEvent]]:
        """One connection to the thread's events (:meth:`Hermes.watch <hermes_sdk.Hermes.watch>`): ``async with
        client.watch(id) as events: async for sse in events: ...``."""
        try:
            async with self._http.stream(
                "GET",
                api.events_path(thread_id),
                headers=api.stream_headers(last_event_id),
                timeout=api.stream_timeout(),
            ) as response:
                if response.status_code == 204:
                    yield _empty()
                    return
                if response.status_code != 200:
                    await response.aread()
                    api.unwrap(response)
                    raise api.bad_stream_status(response)
                yield aparse_sse(response.aiter_lines())
        except httpx.TransportError as exc:
            raise HermesUnreachable(self.base_url, exc) from exc

    async def _follow(self, follow: api.Follow) -> AsyncIterator[SseEvent]:
        """The events of ``follow``'s stream across reconnections (``Last-Event-ID``), until its end."""
        while True:
            error: Exception
            try:
                async with self._http.stream(
                    "GET", follow.path, headers=follow.headers(), timeout=follow.timeout()
                ) as r:
                    if r.status_code == 204:
                        return
                    if r.status_code != 200:
                        await r.aread()
                        api.unwrap(r)
                        raise api.bad_stream_status(r)
                    follow.opened()
                    async for sse in aparse_sse(r.aiter_lines()):
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
            await asyncio.sleep(follow.retry_after(error, self.base_url))

    async def events(
        self, thread_id: str, *, after: int | None = None, tokens: bool = True, timeout_s: float | None = None
    ) -> AsyncIterator[SseEvent]:
        """The thread's events until it ends, reconnecting (:meth:`Hermes.events <hermes_sdk.Hermes.events>`)."""
        async for sse in self._follow(api.follow_thread(thread_id, after, timeout_s, tokens, self.reconnects)):
            yield sse

    # ---- agent runs -------------------------------------------------------------------------------------------------

    async def run_agent(self, task: str, profile: str | None = None, project: str = "default") -> RunStarted:
        """Start an agent run (:meth:`Hermes.run_agent <hermes_sdk.Hermes.run_agent>`)."""
        return await self._do(api.run_agent(task, profile, project, self.channel))

    async def agent_runs(self, limit: int = 50) -> list[AgentRun]:
        """The most recent runs (:meth:`Hermes.agent_runs <hermes_sdk.Hermes.agent_runs>`)."""
        return await self._do(api.agent_runs(limit))

    async def agent_run(self, run_id: str) -> AgentRun:
        """One run with its steps and approvals (:meth:`Hermes.agent_run <hermes_sdk.Hermes.agent_run>`)."""
        return await self._do(api.agent_run(run_id))

    async def cancel_run(self, run_id: str) -> Accepted:
        """Stop a run (:meth:`Hermes.cancel_run <hermes_sdk.Hermes.cancel_run>`)."""
        return await self._do(api.cancel_run(run_id))

    async def profiles(self) -> list[Profile]:
        """The agent profiles (:meth:`Hermes.profiles <hermes_sdk.Hermes.profiles>`)."""
        return await self._do(api.profiles())

    async def steps(
        self, run_id: str, *, after: int | None = None, tokens: bool = False, timeout_s: float | None = None
    ) -> AsyncIterator[Step]:
        """The run's steps as they happen, until it ends, reconnecting with ``Last-Event-ID``
        (:meth:`Hermes.steps <hermes_sdk.Hermes.steps>`)."""
        async for sse in self._follow(api.follow_run(run_id, after, timeout_s, tokens, self.reconnects)):
            yield api.step_of(sse)

    async def wait(self, run_id: str, timeout_s: float = 600.0) -> AgentRun:
        """Wait until the run ends and return it (:meth:`Hermes.wait <hermes_sdk.Hermes.wait>`)."""
        deadline = time.monotonic() + timeout_s
        run = await self.agent_run(run_id)
        if run.ended:
            return run
        async for _ in self.steps(run_id, timeout_s=max(0.0, deadline - time.monotonic())):
            pass  # to its end (the generator finishes, or raises, with it)
        while True:
            run = await self.agent_run(run_id)
            if run.ended:
                return run
            if time.monotonic() >= deadline:
                raise TimeoutError(f"agent run {run_id} did not end within {timeout_s:g} s")
            await asyncio.sleep(api.WAIT_POLL_S)

    # ---- approvals --------------------------------------------------------------------------------------------------

    async def approvals(self, status: str | None = "pending", run_id: str | None = None) -> list[Approval]:
        """Approvals, newest first (:meth:`Hermes.approvals <hermes_sdk.Hermes.approvals>`)."""
        return await self._do(api.approvals(status, run_id))

    async def approve(self, approval_id: str, scope: str = "once", comment: str = "") -> Decided:
        """Approve the call (:meth:`Hermes.approve <hermes_sdk.Hermes.approve>`)."""
        return await self._do(api.decide(approval_id, "approve", scope, comment, self.channel))

    async def reject(self, approval_id: str, comment: str = "") -> Decided:
        """Reject the call (:meth:`Hermes.reject <hermes_sdk.Hermes.reject>`)."""
        return await self._do(api.decide(approval_id, "reject", "once", comment, self.channel))

    # ---- tools ------------------------------------------------------------------------------------------------------

    async def tools(self) -> ToolRegistry:
        """The tool registry (:meth:`Hermes.tools <hermes_sdk.Hermes.tools>`)."""
        return await self._do(api.tools())

    async def mcp_servers(self) -> McpServers:
        """The MCP servers (:meth:`Hermes.mcp_servers <hermes_sdk.Hermes.mcp_servers>`)."""
        return await self._do(api.mcp_servers())

    async def add_mcp_server(
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
        """Add or replace an MCP server (:meth:`Hermes.add_mcp_server <hermes_sdk.Hermes.add_mcp_server>`)."""
        return await self._do(api.add_mcp_server(name, command, url, args, env, cwd, headers, enabled))

    async def remove_mcp_server(self, name: str) -> McpServers:
        """Remove an MCP server (:meth:`Hermes.remove_mcp_server <hermes_sdk.Hermes.remove_mcp_server>`)."""
        return await self._do(api.remove_mcp_server(name))

"""The tool service's MCP client side: one long-lived connection per server of ``mcp.toml``, and the registry of
their tools.

:class:`McpServers` runs one supervisor task per enabled server. The task owns the connection (the SDK's
:class:`mcp.Client` over :func:`mcp.client.stdio.stdio_client` or :func:`mcp.client.streamable_http.
streamable_http_client`): it enters and leaves every SDK context itself, as anyio requires; other tasks only send
requests through it (:meth:`McpServers.call`). The task connects (protocol negotiated by the SDK: the 2026-07-28
``server/discover`` probe, else the ``initialize`` handshake), lists the tools (every page), then waits for one of:
the connection ending (the transport's read side reaching its end: a stdio server's process exiting), a
``tools/list_changed`` notification (through a ``subscriptions/listen`` stream on 2026-07-28, as a plain
notification on earlier protocol versions), the health interval (tools listed again: a server that stops answering
is reconnected), or a stop. A lost server's tools leave the registry at once; it is reconnected after a delay that
doubles up to a bound.

Registry names are ``<server>__<tool>`` (:func:`hermes_proto.tools.mcp_tool_name`); a tool whose registry name is
not ``[A-Za-z0-9_-]{1,64}`` (what model providers accept) is left out, with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import mcp_types as types
import structlog
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from prometheus_client import Gauge

from hermes_proto.tools import ToolSpec, mcp_tool_name, split_mcp_name

from .errors import ToolError
from .mcp_config import McpConfigError, McpServerConfig, config_path, enabled_servers

log = structlog.get_logger("hermes.tools.mcp")

REGISTRY_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
STATES = ("connecting", "ready", "backoff")
MAX_LIST_PAGES = 100
CALL_GRACE_S = 2.0
STOP_TIMEOUT_S = 10.0
HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)

MCP_SERVERS = Gauge("hermes_tools_mcp_servers", "Configured MCP servers by connection state", ["state"])


def _client_info() -> types.Implementation:
    try:
        version = metadata.version("hermes-tools")
    except metadata.PackageNotFoundError:
        version = "0"
    return types.Implementation(name="hermes-tools", version=version)


@dataclass(frozen=True)
class McpResult:
    """What a call returned. ``text``: the text contents joined by newlines, any other content described in one
    bracketed line (``[image image/png 1234 bytes]``); the structured content as JSON when there is no text.
    ``is_error``: the server reported the tool failed (the text says why). ``structured``: the structured content
    (a non-object value is wrapped as ``{"result": value}``), None when there is none."""

    text: str
    is_error: bool
    structured: dict[str, Any] | None = None


OnChange = Callable[[list[ToolSpec]], None | Awaitable[None]]


class _Server:
    """One configured server's supervisor state."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self.state = "connecting"
        self.error: str | None = None
        self.client: Client | None = None
        self.specs: dict[str, ToolSpec] = {}
        self.tool_names: dict[str, str] = {}  # registry name -> the server's own tool name
        self.generation = 0  # connections so far: an old connection's end must not touch a newer one
        self.stopping = False
        self.lost = False
        self.wake = asyncio.Event()
        self.settled = asyncio.Event()  # the first attempt is over (ready or failed)
        self.task: asyncio.Task[None] | None = None


class McpServers:
    """The MCP servers of ``mcp.toml`` and their tools.

    ``config_file``: default ``$HERMES_HOME/mcp.toml``. ``on_change(specs)`` (sync or async) is called with the new
    registry whenever it changes (calls coalesce: the latest registry wins). Backoff after a lost or failed
    connection: ``backoff_initial_s`` doubling to ``backoff_max_s`` (back to initial after ``stable_s`` connected).
    ``health_interval_s``: how often a connected server's tools are listed again; ``list_timeout_s``: the bound
    on one listing and on each handshake request. ``start_wait_s``: how long :meth:`start`/:meth:`reload` wait
    for new servers' first connection attempts. ``errlog``: where stdio servers' stderr goes (default:
    ``sys.stderr``).

    Use ``async with McpServers(...) as servers`` or :meth:`start` then :meth:`close`.
    """

    def __init__(
        self,
        config_file: Path | str | None = None,
        *,
        on_change: OnChange | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        stable_s: float = 60.0,
        health_interval_s: float = 30.0,
        list_timeout_s: float = 30.0,
        start_wait_s: float = 10.0,
        errlog: TextIO | None = None,
    ) -> None:
        self.config_file = Path(config_file) if config_file is not None else config_path()
        self.config_error: McpConfigError | None = None
        self._on_change = on_change
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._stable_s = stable_s
        self._health_interval_s = health_interval_s
        self._list_timeout_s = list_timeout_s
        self._start_wait_s = start_wait_s
        self._errlog = errlog
        self._servers: dict[str, _Server] = {}
        self._registry: list[ToolSpec] = []
        self._changed = asyncio.Event()
        self._notifier: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._file_signature: tuple[int, ...] | None = None
        self._closed = False

    async def __aenter__(self) -> McpServers:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connects every enabled server of the file, waiting up to ``start_wait_s`` for their first attempts. A
        broken file is logged and kept in :attr:`config_error` (no servers start; :meth:`watch` picks up a fix)."""
        if self._notifier is None:
            self._notifier = asyncio.create_task(self._notify_loop(), name="mcp-registry-notify")
        try:
            await self.reload()
        except McpConfigError as exc:
            log.warning("mcp_config_invalid", path=str(self.config_file), code=exc.code, error=exc.message)

    async def reload(self, wait_s: float | None = None) -> None:
        """Re-reads the file: starts new servers, stops removed or disabled ones, restarts changed ones (the
        others keep their connections), then waits up to ``wait_s`` seconds (default ``start_wait_s``; 0: no
        wait) for the started ones' first attempts. Raises :class:`~hermes_tools.mcp_config.McpConfigError`
        (nothing changes then)."""
        started: list[_Server] = []
        async with self._reload_lock:
            if self._closed:
                return
            signature = _signature(self.config_file)
            try:
                wanted = enabled_servers(self.config_file)
            except McpConfigError as exc:
                self._file_signature = signature
                self.config_error = exc
                raise
            self._file_signature = signature
            self.config_error = None
            gone = [
                server for name, server in self._servers.items() if name not in wanted or wanted[name] != server.config
            ]
            for server in gone:
                del self._servers[server.config.name]
            await asyncio.gather(*(self._stop(server) for server in gone))
            for name, config in wanted.items():
                if name not in self._servers:
                    server = _Server(config)
                    self._servers[name] = server
                    server.task = asyncio.create_task(self._supervise(server), name=f"mcp-server-{name}")
                    started.append(server)
                    log.info("mcp_server_started", server=name, transport=config.transport)
            for server in gone:
                log.info("mcp_server_stopped", server=server.config.name)
            self._update_gauge()
        wait_s = self._start_wait_s if wait_s is None else wait_s
        if started and wait_s > 0:  # outside the lock: close() need not wait for slow starters
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.gather(*(server.settled.wait() for server in started))

    async def watch(self, interval_s: float = 1.0) -> None:
        """Polls the file's signature (mtime, size, inode) every ``interval_s`` seconds and calls :meth:`reload`
        when it changed, until :meth:`close` (or cancellation). A broken file is logged, not raised."""
        while not self._closed:
            await asyncio.sleep(interval_s)
            if self._closed or _signature(self.config_file) == self._file_signature:
                continue
            try:
                await self.reload()
            except McpConfigError as exc:
                log.warning("mcp_config_invalid", path=str(self.config_file), code=exc.code, error=exc.message)

    def specs(self) -> list[ToolSpec]:
        """Every connected server's tools, sorted by registry name (``<server>__<tool>``, ``permission="mcp"``,
        ``read_only`` only when the tool's ``readOnlyHint`` is true)."""
        return list(self._registry)

    def states(self) -> dict[str, dict[str, Any]]:
        """Per server: ``state`` (``connecting``, ``ready`` or ``backoff``), ``transport``, ``tools`` (count),
        ``error`` (the last connection failure, None once connected)."""
        return {
            name: {
                "state": server.state,
                "transport": server.config.transport,
                "tools": len(server.specs),
                "error": server.error,
            }
            for name, server in sorted(self._servers.items())
        }

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> McpResult:
        """Calls registry tool ``name`` (``<server>__<tool>``) with ``arguments``, waiting at most ``timeout_s``
        seconds. Raises :class:`~hermes_tools.errors.ToolError`: ``mcp_server_unavailable`` (no such server, or not
        connected, or the connection ended during the call), ``mcp_tool_unknown`` (the server lists no such tool),
        ``mcp_timeout``, ``mcp_error`` (the server answered with a protocol error, or an unusable result)."""
        parts = split_mcp_name(name)
        server = self._servers.get(parts[0]) if parts else None
        client = server.client if server is not None and server.state == "ready" else None
        if server is None or client is None or parts is None:
            raise ToolError("mcp_server_unavailable", f"MCP server for {name!r} is not connected")
        tool = server.tool_names.get(name)
        if tool is None:
            raise ToolError("mcp_tool_unknown", f"MCP server {parts[0]!r} has no tool {parts[1]!r}")
        try:
            async with asyncio.timeout(timeout_s + CALL_GRACE_S):
                result = await client.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except TimeoutError:
            raise ToolError("mcp_timeout", f"{name} did not answer within {timeout_s:g} s") from None
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise ToolError("mcp_timeout", f"{name} did not answer within {timeout_s:g} s") from None
            if exc.code == types.CONNECTION_CLOSED:
                self._lose(server, server.generation)
                raise ToolError(
                    "mcp_server_unavailable", f"MCP server {parts[0]!r} disconnected during the call"
                ) from None
            raise ToolError("mcp_error", f"{name}: MCP error {exc.code}: {exc.message}") from None
        except RuntimeError as exc:  # the client left its context between the lookup and the call
            raise ToolError("mcp_server_unavailable", f"MCP server {parts[0]!r} is not connected: {exc}") from None
        except Exception as exc:  # a result the SDK rejects (validation), an input-required loop...
            raise ToolError("mcp_error", f"{name}: unusable answer: {type(exc).__name__}: {exc}") from None
        return _to_result(result)

    async def close(self) -> None:
        """Stops every server (stdio processes: stdin closed, then terminated, then killed: none outlive this) and
        the watcher; idempotent."""
        self._closed = True
        async with self._reload_lock:
            servers = list(self._servers.values())
            self._servers.clear()
            await asyncio.gather(*(self._stop(server) for server in servers))
        self._update_gauge()
        if self._notifier is not None:
            self._notifier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._notifier
            self._notifier = None

    # -- supervision ---------------------------------------------------------------------------------------------

    async def _stop(self, server: _Server) -> None:
        """Ends the server's supervisor: a connected one leaves its loop and closes the connection; one still
        connecting is cancelled (the SDK's stdio shutdown is shielded and bounded, so no process is left)."""
        server.stopping = True
        server.wake.set()
        task = server.task
        if task is not None:
            if server.state == "connecting":
                task.cancel()
            done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
            if not done:
                task.cancel()
                await asyncio.wait([task], timeout=STOP_TIMEOUT_S)
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("mcp_server_stop_failed", server=server.config.name, error=_describe(task.exception()))
        self._set_tools(server, {}, {})

    async def _supervise(self, server: _Server) -> None:
        loop = asyncio.get_running_loop()
        delay = self._backoff_initial_s
        name = server.config.name
        while not server.stopping:
            server.state = "connecting"
            self._update_gauge()
            started = loop.time()
            try:
                await self._connection(server)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                server.error = _describe(exc)
                log.warning("mcp_server_connection_failed", server=name, error=server.error)
            finally:
                server.client = None
                self._set_tools(server, {}, {})
            server.settled.set()
            if server.stopping:
                break
            if server.error is None:
                server.error = "connection lost"
            if loop.time() - started >= self._stable_s:
                delay = self._backoff_initial_s
            server.state = "backoff"
            self._update_gauge()
            log.info("mcp_server_retry", server=name, delay_s=delay, error=server.error)
            server.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not server.stopping:
                        await server.wake.wait()
                        server.wake.clear()
            delay = min(delay * 2, self._backoff_max_s)

    async def _connection(self, server: _Server) -> None:
        """One connection's life: returns when it is lost or the server is stopped; raises when it fails."""
        server.generation += 1
        generation = server.generation
        server.lost = False
        server.wake.clear()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification) and server.generation == generation:
                server.wake.set()

        errlog = self._errlog if self._errlog is not None else sys.stderr
        transport = _transport(server.config, lambda: self._lose(server, generation), errlog)
        client = Client(
            transport,
            cache=None,  # every listing reaches the server: the registry must follow it
            message_handler=on_message,
            client_info=_client_info(),
            read_timeout_seconds=self._list_timeout_s,  # the handshake's bound; calls pass their own
        )
        async with client:
            await self._refresh(server, client)
            server.client = client
            server.state = "ready"
            server.error = None
            server.settled.set()
            self._update_gauge()
            log.info(
                "mcp_server_ready", server=server.config.name, protocol=client.protocol_version, tools=len(server.specs)
            )
            listener = None
            capability = client.server_capabilities.tools
            if capability and capability.list_changed and client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                listener = asyncio.create_task(self._listen(server, client, generation))
            try:
                while not (server.stopping or server.lost):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._health_interval_s):
                            await server.wake.wait()
                    server.wake.clear()
                    if server.stopping or server.lost:
                        break
                    await self._refresh(server, client)  # also the health check: a failure reconnects
            finally:
                # The tools go before the transport's shutdown (a stdio server gets seconds to exit).
                server.client = None
                self._set_tools(server, {}, {})
                if listener is not None:
                    listener.cancel()
                    await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self, server: _Server, client: Client, generation: int) -> None:
        """Keeps a 2026-07-28 ``subscriptions/listen`` stream open for tools/list_changed (the events also reach
        the message handler; this task only has to hold the stream). A stream that ends asks for a listing (which
        fails, and so reconnects, when the server is gone) and is opened again after a doubling delay."""
        delay = 1.0
        while server.generation == generation and not (server.stopping or server.lost):
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    async for _event in subscription:
                        if server.generation == generation:
                            server.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("mcp_listen_ended", server=server.config.name, error=_describe(exc))
            if server.generation == generation:
                server.wake.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _refresh(self, server: _Server, client: Client) -> None:
        name = server.config.name
        async with asyncio.timeout(self._list_timeout_s):
            tools: list[types.Tool] = []
            cursor: str | None = None
            for _ in range(MAX_LIST_PAGES):
                page = await client.list_tools(cursor=cursor)
                tools.extend(page.tools)
                cursor = page.next_cursor
                if not cursor:
                    break
        specs: dict[str, ToolSpec] = {}
        names: dict[str, str] = {}
        for tool in tools:
            registry_name = mcp_tool_name(name, tool.name)
            if not REGISTRY_NAME.fullmatch(registry_name) or registry_name in specs:
                log.warning("mcp_tool_skipped", server=name, tool=tool.name, reason="name unusable or duplicate")
                continue
            annotations = tool.annotations
            specs[registry_name] = ToolSpec(
                name=registry_name,
                description=tool.description or tool.title or "",
                parameters=dict(tool.input_schema),
                read_only=bool(annotations is not None and annotations.read_only_hint is True),
                permission="mcp",
                server=name,
            )
            names[registry_name] = tool.name
        self._set_tools(server, specs, names)

    def _lose(self, server: _Server, generation: int) -> None:
        """The connection of ``generation`` ended: its tools go now, the supervisor reconnects."""
        if server.generation != generation or server.lost:
            return
        server.lost = True
        server.client = None
        self._set_tools(server, {}, {})
        server.wake.set()

    def _set_tools(self, server: _Server, specs: dict[str, ToolSpec], names: dict[str, str]) -> None:
        server.specs = specs
        server.tool_names = names
        registry = sorted(
            (spec for current in self._servers.values() for spec in current.specs.values()), key=lambda s: s.name
        )
        if registry != self._registry:
            self._registry = registry
            self._changed.set()

    async def _notify_loop(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._on_change is None:
                continue
            try:
                outcome = self._on_change(self.specs())
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("mcp_on_change_failed")

    def _update_gauge(self) -> None:
        counts = dict.fromkeys(STATES, 0)
        for server in self._servers.values():
            counts[server.state] = counts.get(server.state, 0) + 1
        for state, count in counts.items():
            MCP_SERVERS.labels(state=state).set(count)


# -- transports ------------------------------------------------------------------------------------------------


class _WatchedReadStream:
    """A transport's read stream that reports its end (the server closed stdout, the transport shut down) to
    ``on_end``: the SDK's session ends quietly there, and the supervisor must know at once."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        try:
            return await self._inner.receive()
        except Exception:  # EndOfStream, ClosedResourceError, BrokenResourceError
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _transport(config: McpServerConfig, on_end: Callable[[], None], errlog: TextIO) -> AsyncIterator[Any]:
    """The SDK transport of ``config`` with its read side watched (an ``mcp.client.Transport``)."""
    if config.url is not None:
        async with httpx2.AsyncClient(headers=dict(config.headers), timeout=HTTP_TIMEOUT) as http:
            async with streamable_http_client(config.url, http_client=http) as (read, write):
                yield _WatchedReadStream(read, on_end), write
    else:
        argv = config.argv
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(config.env) or None, cwd=config.cwd)
        async with stdio_client(params, errlog=errlog) as (read, write):
            yield _WatchedReadStream(read, on_end), write


# -- results ---------------------------------------------------------------------------------------------------


def _to_result(result: types.CallToolResult) -> McpResult:
    parts = [_describe_content(block) for block in result.content]
    structured = result.structured_content
    if structured is not None and not isinstance(structured, dict):
        structured = {"result": structured}
    text = "\n".join(parts)
    if not parts and structured is not None:
        text = json.dumps(structured, ensure_ascii=False)
    return McpResult(text=text, is_error=bool(result.is_error), structured=structured)


def _describe_content(block: Any) -> str:
    if isinstance(block, types.TextContent):
        return block.text
    if isinstance(block, types.ImageContent | types.AudioContent):
        return f"[{block.type} {block.mime_type} {_decoded_size(block.data)} bytes]"
    if isinstance(block, types.ResourceLink):
        mime = f" {block.mime_type}" if block.mime_type else ""
        return f"[resource link {block.uri}{mime}]"
    if isinstance(block, types.EmbeddedResource):
        resource = block.resource
        mime = f" {resource.mime_type}" if resource.mime_type else ""
        if isinstance(resource, types.TextResourceContents):
            return f"[resource {resource.uri}{mime}]\n{resource.text}"
        return f"[resource {resource.uri}{mime} {_decoded_size(resource.blob)} bytes]"
    return f"[{getattr(block, 'type', type(block).__name__)} content]"


def _decoded_size(data: str) -> int:
    """Bytes a base64 text decodes to (without decoding it)."""
    return len("".join(data.split()).rstrip("=")) * 3 // 4


def _describe(exc: BaseException) -> str:
    """One line for a connection failure: an exception group's leaves, named."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)

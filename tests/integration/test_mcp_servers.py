"""The tool service's MCP client side (hermes_tools.mcp_servers) against real MCP servers in real processes: the
reference ``mcp-server-time`` and ``mcp-server-git`` from PyPI over stdio, and a server written here with the SDK's
``MCPServer`` over stdio and over streamable HTTP (uvicorn, loopback)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from hermes_cli.natsserver import free_port, wait_for_port
from hermes_tools.errors import ToolError
from hermes_tools.mcp_config import McpServerConfig, add_server, remove_server
from hermes_tools.mcp_servers import McpServers

pytestmark = pytest.mark.timeout(60)

# A server with the SDK's high-level API: a read-only tool, an unannotated one that fails, an image, a slow one, one
# that reads a request header (streamable HTTP only) and one that adds a tool and announces the change.
TEST_SERVER = '''
import asyncio
import os
import sys

from mcp.server.mcpserver import Context, Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

if os.environ.get("PID_FILE"):
    with open(os.environ["PID_FILE"], "w") as handle:
        handle.write(str(os.getpid()))

# NO_LISTEN: no subscriptions/listen (and no listChanged), as mcp-server-time and mcp-server-git
server = MCPServer("hermes-test", subscriptions=False if os.environ.get("NO_LISTEN") else None)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def echo(text: str) -> str:
    """Returns the text unchanged."""
    return os.environ.get("ECHO_PREFIX", "") + text


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ToolError(f"refused: {reason}")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def pixel() -> Image:
    """Ten bytes of image."""
    return Image(data=b"0123456789", format="png")


@server.tool(annotations=ToolAnnotations(read_only_hint=False))
async def nap(seconds: float) -> str:
    """Sleeps."""
    await asyncio.sleep(seconds)
    return "awake"


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def header(name: str, ctx: Context) -> str:
    """A header of the HTTP request that carried this call."""
    request = ctx.request_context.request
    return "" if request is None else request.headers.get(name, "")


@server.tool()
async def grow(name: str, ctx: Context) -> str:
    """Adds a tool called `name` and announces the tools/list change."""

    def added() -> str:
        return "added"

    server.add_tool(added, name=name, description="added at run time")
    await ctx.notify_tools_changed()
    return "grown"


if len(sys.argv) == 3 and sys.argv[1] == "--http":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
else:
    server.run()
'''


@pytest.fixture
def server_file(tmp_path: Path) -> Path:
    path = tmp_path / "test_server.py"
    path.write_text(TEST_SERVER)
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return tmp_path / "home" / "mcp.toml"


def sdk_server(name: str, server_file: Path, pid_file: Path, **env: str) -> McpServerConfig:
    return McpServerConfig(
        name=name, command=(sys.executable, str(server_file)), env={"PID_FILE": str(pid_file), **env}
    )


@pytest.fixture
async def manager(config_file: Path) -> AsyncIterator[McpServers]:
    """A started manager (short backoff) over ``config_file`` as the test wrote it; closed after the test."""
    changes: list[list[str]] = []
    servers = McpServers(
        config_file,
        on_change=lambda specs: changes.append([spec.name for spec in specs]),
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
        start_wait_s=20.0,
        errlog=sys.stderr,
    )
    servers.changes = changes  # type: ignore[attr-defined]
    yield servers
    await servers.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pid(path: Path) -> int:
    return int(path.read_text())


def names(servers: McpServers, server: str | None = None) -> set[str]:
    return {spec.name for spec in servers.specs() if server is None or spec.server == server}


async def test_time_server_over_stdio(config_file: Path, manager: McpServers) -> None:
    add_server(
        config_file,
        McpServerConfig(
            name="time", command=(sys.executable, "-m", "mcp_server_time"), args=("--local-timezone", "UTC")
        ),
    )
    await manager.start()
    assert names(manager) == {"time__get_current_time", "time__convert_time"}
    spec = next(spec for spec in manager.specs() if spec.name == "time__get_current_time")
    assert (spec.server, spec.permission, spec.read_only) == ("time", "mcp", True)
    assert "timezone" in spec.parameters["properties"]
    assert spec.description

    result = await manager.call("time__get_current_time", {"timezone": "Asia/Tokyo"}, timeout_s=10)
    assert not result.is_error
    assert result.structured is not None and result.structured["timezone"] == "Asia/Tokyo"
    assert result.structured["datetime"].endswith("+09:00")
    assert "Asia/Tokyo" in result.text

    bad = await manager.call("time__get_current_time", {"timezone": "Nowhere/Nothing"}, timeout_s=10)
    assert bad.is_error and "Nowhere/Nothing" in bad.text

    with pytest.raises(ToolError) as unknown_server:
        await manager.call("nosuch__get_current_time", {}, timeout_s=5)
    assert unknown_server.value.code == "mcp_server_unavailable"
    with pytest.raises(ToolError) as unknown_tool:
        await manager.call("time__nosuch", {}, timeout_s=5)
    assert unknown_tool.value.code == "mcp_tool_unknown"


async def test_sdk_server_over_stdio(config_file: Path, manager: McpServers, server_file: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "test.pid"
    add_server(config_file, sdk_server("test", server_file, pid_file))
    await manager.start()
    specs = {spec.name: spec for spec in manager.specs()}
    assert set(specs) == {"test__echo", "test__fail", "test__pixel", "test__nap", "test__header", "test__grow"}
    assert specs["test__echo"].read_only and specs["test__pixel"].read_only
    assert not specs["test__fail"].read_only  # no annotations: not read-only
    assert not specs["test__nap"].read_only  # readOnlyHint false
    assert specs["test__echo"].description == "Returns the text unchanged."
    assert specs["test__echo"].parameters["properties"]["text"]["type"] == "string"

    echoed = await manager.call("test__echo", {"text": "hello"}, timeout_s=5)
    assert (echoed.text, echoed.is_error) == ("hello", False)
    failed = await manager.call("test__fail", {"reason": "because"}, timeout_s=5)
    assert failed.is_error and "refused: because" in failed.text
    image = await manager.call("test__pixel", {}, timeout_s=5)
    assert image.text == "[image image/png 10 bytes]"
    with pytest.raises(ToolError) as slow:
        await manager.call("test__nap", {"seconds": 5}, timeout_s=0.3)
    assert slow.value.code == "mcp_timeout"

    # tools/list_changed (a subscriptions/listen stream on 2026-07-28) refreshes the server's tools
    assert (await manager.call("test__grow", {"name": "sprout"}, timeout_s=5)).text == "grown"
    await wait_until(lambda: "test__sprout" in names(manager), timeout_s=5)
    await wait_until(lambda: any("test__sprout" in change for change in manager.changes), timeout_s=5)
    assert (await manager.call("test__sprout", {}, timeout_s=5)).text == "added"

    pid = read_pid(pid_file)
    assert alive(pid)
    await manager.close()
    assert manager.specs() == []
    assert not alive(pid)  # no orphan: the server process is gone (and reaped) once close returns


@pytest.fixture
def http_server(server_file: Path) -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(server_file), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)


async def test_sdk_server_over_streamable_http(config_file: Path, manager: McpServers, http_server: int) -> None:
    add_server(
        config_file,
        McpServerConfig(name="web", url=f"http://127.0.0.1:{http_server}/mcp", headers={"X-Hermes-Test": "sesame"}),
    )
    await manager.start()
    assert manager.states()["web"]["state"] == "ready"
    assert {"web__echo", "web__fail", "web__header"} <= names(manager)
    assert next(spec for spec in manager.specs() if spec.name == "web__echo").read_only
    assert (await manager.call("web__echo", {"text": "over http"}, timeout_s=5)).text == "over http"
    assert (await manager.call("web__header", {"name": "x-hermes-test"}, timeout_s=5)).text == "sesame"
    assert (await manager.call("web__fail", {"reason": "http"}, timeout_s=5)).is_error


async def test_config_edits_apply_without_restart(
    config_file: Path, manager: McpServers, server_file: Path, tmp_path: Path
) -> None:
    add_server(config_file, sdk_server("keep", server_file, tmp_path / "keep.pid"))
    await manager.start()
    watcher = asyncio.create_task(manager.watch(interval_s=0.1))
    try:
        keep_pid = read_pid(tmp_path / "keep.pid")
        assert names(manager) and names(manager) == names(manager, "keep")

        add_server(config_file, sdk_server("extra", server_file, tmp_path / "extra.pid"))
        await wait_until(lambda: "extra__echo" in names(manager), timeout_s=15)
        first_extra = read_pid(tmp_path / "extra.pid")

        # a changed server restarts (its new setting applies); the unchanged one keeps its process
        add_server(
            config_file, sdk_server("extra", server_file, tmp_path / "extra.pid", ECHO_PREFIX="v2:"), replace=True
        )
        await wait_until(lambda: read_pid(tmp_path / "extra.pid") != first_extra, timeout_s=15)
        await wait_until(lambda: "extra__echo" in names(manager), timeout_s=15)
        assert (await manager.call("extra__echo", {"text": "x"}, timeout_s=5)).text == "v2:x"
        assert not alive(first_extra)

        remove_server(config_file, "extra")
        await wait_until(lambda: not names(manager, "extra"), timeout_s=15)
        await wait_until(lambda: not alive(read_pid(tmp_path / "extra.pid")), timeout_s=10)
        assert "extra" not in manager.states()
        with pytest.raises(ToolError) as gone:
            await manager.call("extra__echo", {"text": "x"}, timeout_s=5)
        assert gone.value.code == "mcp_server_unavailable"

        assert read_pid(tmp_path / "keep.pid") == keep_pid and alive(keep_pid)
        assert (await manager.call("keep__echo", {"text": "still"}, timeout_s=5)).text == "still"
        # on_change saw the server's tools come and go
        assert any("extra__echo" in change for change in manager.changes)
        await wait_until(lambda: "extra__echo" not in manager.changes[-1], timeout_s=5)
    finally:
        watcher.cancel()


@pytest.mark.parametrize("listen", [True, False], ids=["listening", "not-listening"])
async def test_killed_server_leaves_the_registry_and_comes_back(
    config_file: Path, manager: McpServers, server_file: Path, tmp_path: Path, listen: bool
) -> None:
    # not-listening: only the end of the server's stdout tells (the health check's listing comes after 30 s);
    # listening: the subscriptions/listen stream breaks too
    pid_file = tmp_path / "victim.pid"
    env = {} if listen else {"NO_LISTEN": "1"}
    add_server(config_file, sdk_server("victim", server_file, pid_file, **env))
    await manager.start()
    assert "victim__echo" in names(manager)
    first = read_pid(pid_file)

    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: not names(manager, "victim"), timeout_s=3)
    with pytest.raises(ToolError) as dead:
        await manager.call("victim__echo", {"text": "x"}, timeout_s=5)
    assert dead.value.code == "mcp_server_unavailable"

    # retried: a new process, its tools back
    await wait_until(lambda: "victim__echo" in names(manager), timeout_s=20)
    assert read_pid(pid_file) != first
    assert (await manager.call("victim__echo", {"text": "again"}, timeout_s=5)).text == "again"


async def test_git_server_on_a_real_repository(config_file: Path, manager: McpServers, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=Hermes Test", "-c", "user.email=test@hermes.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "README.md").write_text("hello\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first commit from the test"], check=True)
    (repo / "untracked.txt").write_text("new\n")

    add_server(
        config_file,
        McpServerConfig(name="git", command=(sys.executable, "-m", "mcp_server_git"), args=("--repository", str(repo))),
    )
    await manager.start()
    specs = {spec.name: spec for spec in manager.specs()}
    assert specs["git__git_log"].read_only and specs["git__git_status"].read_only
    assert not specs["git__git_commit"].read_only

    log = await manager.call("git__git_log", {"repo_path": str(repo)}, timeout_s=10)
    assert not log.is_error and "first commit from the test" in log.text
    status = await manager.call("git__git_status", {"repo_path": str(repo)}, timeout_s=10)
    assert not status.is_error and "untracked.txt" in status.text
    outside = await manager.call("git__git_status", {"repo_path": str(tmp_path)}, timeout_s=10)
    assert outside.is_error


async def test_broken_and_silent_servers_neither_block_nor_leak(config_file: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "silent.pid"
    silent = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    add_server(config_file, McpServerConfig(name="silent", command=(sys.executable, "-c", silent)))
    add_server(config_file, McpServerConfig(name="broken", command=(str(tmp_path / "no-such-program"),)))
    servers = McpServers(config_file, backoff_initial_s=0.2, start_wait_s=1.0, list_timeout_s=30.0)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await servers.start()
        assert loop.time() - began < 5  # bounded by start_wait_s, not by the silent server
        await wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout_s=10)
        states = servers.states()
        assert states["silent"]["state"] == "connecting"
        assert states["broken"]["state"] in ("backoff", "connecting")
        await wait_until(lambda: servers.states()["broken"]["error"], timeout_s=5)
        assert "no-such-program" in servers.states()["broken"]["error"]
        assert servers.specs() == []
        with pytest.raises(ToolError) as refused:
            await servers.call("silent__anything", {}, timeout_s=1)
        assert refused.value.code == "mcp_server_unavailable"
    finally:
        began = asyncio.get_running_loop().time()
        await servers.close()
    assert asyncio.get_running_loop().time() - began < 10
    assert not alive(read_pid(pid_file))

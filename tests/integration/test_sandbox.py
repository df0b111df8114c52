"""The bubblewrap sandbox and the built-in tools, for real (bwrap, loopback servers, no mocks): every escape attempt
refused or contained with the evidence checked on the host, and the tools doing their job.

Layout per test: ``<tmp>/home`` is a Hermes home with a secret file, ``<tmp>/home/workspace/proj`` the workspace.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hermes_proto.outbound import OutboundPolicy

from hermes_tools import sandbox
from hermes_tools.builtin import ToolContext, _file_op, run_builtin
from hermes_tools.errors import ToolError
from hermes_tools.redact import Redactor
from hermes_tools.sandbox import SANDBOX_UID, SandboxLimits, run_sandboxed, sandbox_available
from hermes_tools.workspace import workspace_dir

SECRET = "sentinel-secret-3f9a1c"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text(SECRET + "\n")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_ed25519").write_text(SECRET + "\n")
    return home


@pytest.fixture
def ws(home: Path) -> Path:
    return workspace_dir(home, "proj")


@pytest.fixture
def ctx(ws: Path) -> ToolContext:
    return ToolContext(workspace=ws, limits=SandboxLimits(wall_seconds=10))


async def shell(ctx: ToolContext, command: str) -> str:
    return (await run_builtin("shell", {"command": command}, ctx)).text


async def refused(code: str, name: str, arguments: dict, ctx: ToolContext) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await run_builtin(name, arguments, ctx)
    assert caught.value.code == code, caught.value
    return caught.value


def sandbox_user_processes(marker: str) -> int:
    """Processes of the sandbox user on the host whose command line holds ``marker``."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != SANDBOX_UID:
                    continue
                count += marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes()
            except (FileNotFoundError, ProcessLookupError):
                pass
    return count


def test_the_sandbox_is_available():
    """bubblewrap is a dependency of the tool service: a sandbox that cannot start here is a failure, not a skip."""
    assert sandbox_available() is None


# --- what the sandbox exposes ----------------------------------------------------------------------------------


async def test_nothing_secret_of_the_host_is_visible(ctx: ToolContext, home: Path):
    assert Path("/etc/shadow").exists()  # on the host, so "missing" below means "not mounted"
    out = await shell(
        ctx,
        f"cat {home}/secret.txt; cat {home}/.ssh/id_ed25519; ls {home}; cat /etc/shadow; ls -A /root/;"
        "ls /home; ls -A /; id -u",
    )
    assert SECRET not in out
    for path in (f"{home}/secret.txt", f"{home}/.ssh/id_ed25519", "/etc/shadow"):
        assert f"cat: {path}: No such file or directory" in out, path
    for path in (str(home), "/home"):
        assert f"ls: cannot access '{path}': No such file or directory" in out, path
    listing = out.split("[stderr]")[0].split()
    assert listing[-1] == str(SANDBOX_UID)  # not root
    top = set(listing[:-1]) - {".pyenv"}  # `ls -A /root/` shows only the base interpreter's tree (if it is there)
    python_tops = {Path(p).parts[1] for p in (sys.prefix, os.path.realpath(sys.base_prefix))}
    allowed = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp", "workspace"}
    assert top <= allowed | python_tops, top
    assert "home" not in top and "var" not in top and "run" not in top and "sys" not in top


async def test_the_python_tool_uses_the_service_interpreter(ctx: ToolContext):
    out = await run_builtin(
        "python", {"code": "import sys, os; print(sys.version); print(os.getcwd()); print(6 * 7)"}, ctx
    )
    assert out.text.splitlines()[:3] == [sys.version, "/workspace", "42"]
    assert out.data["exit_code"] == 0


async def test_an_interpreter_installed_under_tmp_stays_visible(ws: Path, tmp_path: Path, monkeypatch):
    """A CI checkout keeps its venv under /tmp: the sandbox's private /tmp must not hide it."""
    import hermes_tools.sandbox as sandbox

    installed = tmp_path / "checkout" / ".venv"
    installed.mkdir(parents=True)
    (installed / "marker").write_text("the interpreter's files\n")
    installed.chmod(0o755)
    for parent in (tmp_path / "checkout", tmp_path):
        parent.chmod(0o755)
    real = sandbox._python_roots()
    monkeypatch.setattr(sandbox, "_python_roots", lambda: [*real, str(installed)])
    result = await run_sandboxed(["cat", str(installed / "marker")], ws, SandboxLimits(wall_seconds=10))
    assert result.exit_code == 0 and result.stdout == b"the interpreter's files\n", result
    private = await run_sandboxed(["sh", "-c", "ls -A /tmp"], ws, SandboxLimits(wall_seconds=10))
    # nothing of the host's /tmp but the interpreters' paths (the service's own venv is under /tmp in a CI checkout)
    expected = {Path(root).parts[2].encode() for root in [*real, str(installed)] if Path(root).parts[1] == "tmp"}
    assert set(private.stdout.split()) == expected


async def test_writes_outside_the_workspace_fail(ctx: ToolContext, ws: Path, home: Path):
    marker = f"escape-{uuid.uuid4().hex}"
    out = await shell(
        ctx,
        f"echo x > /usr/{marker}; echo x > /etc/{marker}; echo x > /{marker}; echo x > ../{marker};"
        f"echo x > {home}/{marker}; echo x > /tmp/{marker} && echo tmp-ok; echo x > inside.txt",
    )
    assert out.count("Read-only file system") >= 4, out
    for host in (f"/usr/{marker}", f"/etc/{marker}", f"/{marker}", f"{home}/{marker}", f"{ws.parent}/{marker}"):
        assert not os.path.exists(host), host
    assert "tmp-ok" in out and not os.path.exists(f"/tmp/{marker}")  # a private /tmp, gone with the sandbox
    assert (ws / "inside.txt").read_text() == "x\n"
    await refused("path_outside_workspace", "file_write", {"path": f"../{marker}", "content": "x"}, ctx)
    await refused("path_outside_workspace", "file_write", {"path": f"{home}/{marker}", "content": "x"}, ctx)
    assert not (home / marker).exists() and not (ws.parent / marker).exists()


async def test_symlink_escapes_are_refused_by_file_tools(ctx: ToolContext, ws: Path, home: Path):
    (ws / "leak").symlink_to(home / "secret.txt")
    (ws / "etc").symlink_to("/etc")
    (ws / "shadow").symlink_to("/etc/shadow")
    for name, arguments in [
        ("file_read", {"path": "leak"}),
        ("file_read", {"path": "etc/passwd"}),
        ("file_read", {"path": "shadow"}),
        ("file_list", {"path": "etc"}),
        ("file_write", {"path": "etc/evil.conf", "content": "x"}),
        ("file_write", {"path": "leak", "content": "overwritten"}),
        ("file_edit", {"path": "leak", "old": "sentinel", "new": "x"}),
    ]:
        error = await refused("path_outside_workspace", name, arguments, ctx)
        assert SECRET not in error.message
    assert (home / "secret.txt").read_text() == SECRET + "\n" and not Path("/etc/evil.conf").exists()

    # The helper in the sandbox checks again on its own, should the host's check ever be bypassed.
    for op, request in [("read", {"path": "leak"}), ("read", {"path": "etc/passwd"}), ("list", {"path": "etc"})]:
        with pytest.raises(ToolError) as caught:
            await _file_op(op, request, ctx)
        assert caught.value.code == "path_outside_workspace"
    # A search walks the workspace without following links out of it.
    out = await run_builtin("file_search", {"pattern": "sentinel|root:"}, ctx)
    assert out.text == "(no matches)"
    # A link that stays inside is fine.
    (ws / "real.txt").write_text("inside\n")
    (ws / "alias").symlink_to("real.txt")
    assert (await run_builtin("file_read", {"path": "alias"}, ctx)).text == "inside\n"


async def test_symlink_escapes_from_the_shell_reach_nothing(ctx: ToolContext, ws: Path, home: Path):
    (ws / "leak").symlink_to(home / "secret.txt")
    (ws / "shadow").symlink_to("/etc/shadow")
    (ws / "etc").symlink_to("/etc")
    out = await shell(ctx, "cat leak; cat shadow; cat etc/passwd; echo x >> etc/passwd; ln -s /etc/hosts h; cat h")
    assert SECRET not in out
    assert "leak: No such file or directory" in out and "shadow: No such file or directory" in out
    assert "sandbox:x:65534" in out and "daemon:" not in out  # the synthetic passwd, not the host's
    assert "cannot create etc/passwd" in out
    assert "127.0.0.1 localhost" in out  # the sandbox's own /etc/hosts
    assert not Path("/etc/passwd").read_text().endswith("x\n")


async def test_dotdot_traversal_is_refused(ctx: ToolContext, ws: Path):
    (ws / "sub").mkdir()
    for path in ("../secret.txt", "sub/../../secret.txt", "../../home/secret.txt", "/workspace/../secret.txt"):
        error = await refused("path_outside_workspace", "file_read", {"path": path}, ctx)
        assert SECRET not in error.message
    out = await shell(ctx, "cat ../secret.txt; cat ../../secret.txt; cd .. && ls")
    assert SECRET not in out and "No such file or directory" in out


# --- network ---------------------------------------------------------------------------------------------------


class Listener:
    """A loopback TCP server that counts connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> Listener:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_no_network_without_permission(ws: Path):
    code = (
        "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=3); print('connected')"
    )
    async with Listener() as listener:
        closed = ToolContext(workspace=ws, network=False)
        out = await shell(closed, f'python -c "{code}" {listener.port}')
        assert "connected" not in out and "ConnectionRefusedError" in out
        assert listener.connections == 0
        # The same command with network granted does connect: the refusal above is the sandbox's doing.
        granted = ToolContext(workspace=ws, network=True)
        assert "connected" in await shell(granted, f'python -c "{code}" {listener.port}')
        assert listener.connections == 1


# --- resource limits -------------------------------------------------------------------------------------------


async def test_fork_bomb_is_contained(ws: Path):
    marker = f"bomb-{uuid.uuid4().hex}"  # in every copy's command line: counts this bomb's processes only
    bomb = f"import os, time  # {marker}\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
    bomb += "        time.sleep(0.05)\n"
    limits = SandboxLimits(wall_seconds=3, max_processes=24)
    peak = 0
    host_spawn: list[float] = []

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sandbox_user_processes(marker))
            started = time.monotonic()
            await asyncio.to_thread(subprocess.run, ["true"], check=True)  # the host can still start processes
            host_spawn.append(time.monotonic() - started)
            await asyncio.sleep(0.1)

    watcher = asyncio.ensure_future(watch())
    started = time.monotonic()
    result = await run_sandboxed([sys.executable, "-c", bomb], ws, limits)
    elapsed = time.monotonic() - started
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    seen = f"peak {peak}, host spawns {[round(t, 2) for t in host_spawn]}, elapsed {elapsed:.2f} s, {result}"
    assert result.timed_out and result.exit_code == -9, seen
    assert elapsed < limits.wall_seconds + 3, seen
    assert limits.max_processes - 4 <= peak <= limits.max_processes, seen  # reached the ceiling, never past it
    assert host_spawn and max(host_spawn) < 2.0, seen
    assert sandbox_user_processes(marker) == 0  # the whole tree is gone once the call returned


async def test_endless_command_is_killed_at_the_wall_limit(ws: Path):
    limits = SandboxLimits(wall_seconds=1)
    forever = f"1000.{uuid.uuid4().int % 10**9:09d}"  # seconds: a unique command line to find its processes by
    started = time.monotonic()
    result = await run_sandboxed(["sh", "-c", f"sleep {forever} & echo begun; sleep {forever}"], ws, limits)
    assert result.timed_out and result.exit_code == -9 and result.stdout == b"begun\n"
    assert 1.0 <= time.monotonic() - started < 3.0 and 1000 <= result.duration_ms < 3000
    assert sandbox_user_processes(forever) == 0  # the background sleep too

    out = await run_builtin("shell", {"command": "sleep 1000"}, ToolContext(workspace=ws, limits=limits))
    assert out.data["timed_out"] and "wall time limit of 1 s" in out.text


async def test_cpu_limit(ws: Path):
    result = await run_sandboxed(
        [sys.executable, "-c", "while True: pass"], ws, SandboxLimits(cpu_seconds=1, wall_seconds=10)
    )
    assert not result.timed_out and result.exit_code != 0 and result.duration_ms < 5000


async def test_memory_limit(ws: Path):
    code = "b = bytearray(600 * 1024 * 1024); print('allocated')"
    result = await run_sandboxed([sys.executable, "-c", code], ws, SandboxLimits(memory_mb=256))
    assert b"allocated" not in result.stdout and b"MemoryError" in result.stderr


async def test_output_flood_is_cut_and_the_process_killed(ws: Path):
    limits = SandboxLimits(max_output_bytes=1024 * 1024)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    result = await run_sandboxed(["sh", "-c", "head -c 100000000 /dev/zero; touch finished"], ws, limits)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.truncated and not result.timed_out and result.exit_code == -9
    assert len(result.stdout) == limits.max_output_bytes and set(result.stdout) == {0}
    assert not (ws / "finished").exists()  # killed before the 100 MB were written
    assert rss_after - rss_before < 50 * 1024  # never held the 100 MB
    assert result.duration_ms < 5000


async def test_tool_output_is_cut_for_the_model_and_kept_whole(ctx: ToolContext, ws: Path):
    ctx.max_output_chars = 2000
    out = await run_builtin("shell", {"command": "seq 1 20000"}, ctx)
    assert out.truncated and out.full_output_path and len(out.text) < 2200
    assert out.text.startswith("1\n2\n3\n") and out.text.rstrip().endswith("20000\n[exit code 0]")
    kept = (ws / out.full_output_path).read_text()
    assert kept.splitlines()[:20000] == [str(i) for i in range(1, 20001)]
    read_back = await run_builtin("file_read", {"path": out.full_output_path, "offset": 19999, "limit": 2}, ctx)
    assert read_back.text == "19999\n20000\n"


# --- secrets ---------------------------------------------------------------------------------------------------


async def test_the_environment_carries_no_secret(ctx: ToolContext, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HERMES_FAKE_API_TOKEN", SECRET)
    monkeypatch.setenv("UNRELATED_SETTING", SECRET)  # not even a secret-looking name gets through
    ctx.redactor = Redactor.from_env({})  # no secrets: the test sees what the sandbox printed, not what was hidden
    out = await shell(ctx, "env; cat /proc/self/environ; cat /proc/1/environ; cat /proc/$PPID/environ; echo end")
    assert SECRET not in out and "end" in out
    names = {line.split("=", 1)[0] for line in out.split("[stderr]")[0].splitlines() if "=" in line}
    assert {"PATH", "HOME", "LANG", "TERM"} <= names <= {"PATH", "HOME", "LANG", "TERM", "PWD", "SHLVL", "_"}
    code = "import os; print(sorted(os.environ))"
    py = await run_builtin("python", {"code": code}, ctx)
    assert SECRET not in py.text and "HERMES_FAKE_API_TOKEN" not in py.text


async def test_a_secret_in_a_workspace_file_is_redacted_in_outputs(ctx: ToolContext, ws: Path):
    (ws / ".env").write_text("OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz0123\n")
    for name, arguments in [("file_read", {"path": ".env"}), ("shell", {"command": "cat .env"})]:
        out = await run_builtin(name, arguments, ctx)
        assert "sk-proj-" not in out.text and "OPENAI_API_KEY=[REDACTED]" in out.text


# --- refusing to run unsandboxed -------------------------------------------------------------------------------


@pytest.fixture
def broken_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A bwrap that fails the way it does when namespaces are refused."""
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    sandbox_available.cache_clear()
    monkeypatch.setattr(sandbox, "bwrap_binary", lambda: str(fake))
    yield
    monkeypatch.undo()
    sandbox_available.cache_clear()


async def test_no_sandbox_means_no_run(broken_bwrap, ws: Path):
    assert "No permissions to create new namespace" in (sandbox_available() or "")
    with pytest.raises(ToolError) as caught:
        await run_sandboxed(["sh", "-c", "touch ran"], ws)
    assert caught.value.code == "sandbox_unavailable" and "namespace" in caught.value.message
    with pytest.raises(ToolError) as caught:
        await run_builtin("file_write", {"path": "ran", "content": "x"}, ToolContext(workspace=ws))
    assert caught.value.code == "sandbox_unavailable"
    assert not (ws / "ran").exists()


# --- the tools at work -----------------------------------------------------------------------------------------


async def test_shell_writes_and_file_read_reads(ctx: ToolContext, ws: Path):
    out = await run_builtin("shell", {"command": "printf 'one\\ntwo\\nthree\\n' > notes.txt && echo ok"}, ctx)
    assert out.text == "ok\n[exit code 0]" and out.data["exit_code"] == 0
    assert (await run_builtin("file_read", {"path": "notes.txt"}, ctx)).text == "one\ntwo\nthree\n"
    part = await run_builtin("file_read", {"path": "/workspace/notes.txt", "offset": 2, "limit": 1}, ctx)
    assert part.text == "two\n" and part.data == {
        "path": "notes.txt",
        "start_line": 2,
        "end_line": 2,
        "total_lines": 3,
        "truncated": False,
    }
    failing = await run_builtin("shell", {"command": "echo oops >&2; exit 3"}, ctx)
    assert failing.text == "[stderr]\noops\n[exit code 3]" and failing.data["exit_code"] == 3
    await refused("file_not_found", "file_read", {"path": "missing.txt"}, ctx)
    (ws / "bin.dat").write_bytes(b"\x00\x01\x02")
    await refused("binary_file", "file_read", {"path": "bin.dat"}, ctx)


async def test_file_write_and_edit(ctx: ToolContext, ws: Path):
    out = await run_builtin("file_write", {"path": "pkg/mod.py", "content": "a = 1\nb = 2\nc = 2\n"}, ctx)
    assert out.data == {"path": "pkg/mod.py", "bytes": 18, "created": True}
    assert (ws / "pkg" / "mod.py").read_text() == "a = 1\nb = 2\nc = 2\n"
    out = await run_builtin("file_edit", {"path": "pkg/mod.py", "old": "b = 2", "new": "b = 20"}, ctx)
    assert out.data["line"] == 2 and (ws / "pkg" / "mod.py").read_text() == "a = 1\nb = 20\nc = 2\n"
    error = await refused("old_not_unique", "file_edit", {"path": "pkg/mod.py", "old": " = ", "new": "="}, ctx)
    assert "3 times" in error.message
    await refused("old_not_found", "file_edit", {"path": "pkg/mod.py", "old": "zzz", "new": "y"}, ctx)
    assert (ws / "pkg" / "mod.py").read_text() == "a = 1\nb = 20\nc = 2\n"  # failed edits change nothing
    await refused("is_a_directory", "file_write", {"path": "pkg", "content": "x"}, ctx)


async def test_file_list_and_search(ctx: ToolContext, ws: Path):
    (ws / "src").mkdir()
    (ws / "src" / "app.py").write_text("import os\n\ndef main():\n    return os.getcwd()\n")
    (ws / "src" / "notes.md").write_text("call main() here\n")
    (ws / "README.md").write_text("# Main project\n")
    listing = await run_builtin("file_list", {}, ctx)
    assert [e["path"] for e in listing.data["entries"]] == ["README.md", "src"]
    deep = await run_builtin("file_list", {"recursive": True, "glob": "**/*.py"}, ctx)
    assert [(e["path"], e["size"]) for e in deep.data["entries"]] == [("src/app.py", 46)]
    assert "src/app.py" in deep.text and deep.data["entries"][0]["mtime"].endswith("Z")

    found = await run_builtin("file_search", {"pattern": r"def \w+\("}, ctx)
    assert found.text == "src/app.py:3: def main():"
    found = await run_builtin("file_search", {"pattern": "main()", "literal": True, "path": "**/*.md"}, ctx)
    assert found.text == "src/notes.md:1: call main() here"
    found = await run_builtin("file_search", {"pattern": "main", "ignore_case": True}, ctx)
    assert found.text.splitlines() == [
        "README.md:1: # Main project",
        "src/app.py:3: def main():",
        "src/notes.md:1: call main() here",
    ]
    await refused("invalid_pattern", "file_search", {"pattern": "(unclosed"}, ctx)


# --- web_fetch -------------------------------------------------------------------------------------------------

ARTICLE = """<html><head><title>Tea</title></head><body><nav>Home | About | Login</nav>
<article><h1>Green tea</h1><p>Green tea is made from leaves that have not undergone withering and oxidation.
It originated in China and its production spread to other countries in East Asia.</p>
<p>Several varieties of green tea exist, which differ in the growing conditions, horticultural methods,
production processing and harvesting time.</p></article><footer>Copyright footer</footer></body></html>"""


class WebServer:
    """A real HTTP/1.1 server on 127.0.0.1: ``/article`` (HTML), ``/plain``, ``/moved`` (302 to /article),
    ``/image`` (PNG); anything else 404."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def __aenter__(self) -> WebServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        path = head.split(" ")[1]
        self.requests.append(path)
        routes = {
            "/article": ("200 OK", "text/html; charset=utf-8", ARTICLE.encode(), ""),
            "/plain": ("200 OK", "text/plain", b"just text", ""),
            "/moved": ("302 Found", "text/plain", b"", "Location: /article\r\n"),
            "/image": ("200 OK", "image/png", b"\x89PNG\r\n", ""),
        }
        status, ctype, body, extra = routes.get(path, ("404 Not Found", "text/plain", b"nope", ""))
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n{extra}"
            "Connection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def web() -> AsyncIterator[WebServer]:
    async with WebServer() as server:
        yield server


async def test_web_fetch_reads_a_page(web: WebServer, ws: Path):
    ctx = ToolContext(workspace=ws, outbound=OutboundPolicy.parse(f"127.0.0.1:{web.port}"))
    out = await run_builtin("web_fetch", {"url": f"http://127.0.0.1:{web.port}/article"}, ctx)
    assert "Green tea is made from leaves" in out.text and "<p>" not in out.text
    assert "Login" not in out.text  # the boilerplate is gone: trafilatura extracted the article
    assert out.data["extracted"] and out.data["status"] == 200
    moved = await run_builtin("web_fetch", {"url": f"http://127.0.0.1:{web.port}/moved"}, ctx)
    assert "Green tea" in moved.text and moved.data["url"].endswith("/article")
    plain = await run_builtin("web_fetch", {"url": f"http://127.0.0.1:{web.port}/plain"}, ctx)
    assert plain.text == "just text" and not plain.data["extracted"]


async def test_web_fetch_errors(web: WebServer, ws: Path):
    ctx = ToolContext(workspace=ws, outbound=OutboundPolicy.parse(f"127.0.0.1:{web.port}"))
    error = await refused("http_404", "web_fetch", {"url": f"http://127.0.0.1:{web.port}/missing"}, ctx)
    assert "404" in error.message
    await refused("unsupported_content_type", "web_fetch", {"url": f"http://127.0.0.1:{web.port}/image"}, ctx)
    for url in ("file:///etc/passwd", "ftp://example.com/x", "gopher://127.0.0.1/", "http:///nohost"):
        await refused("invalid_url", "web_fetch", {"url": url}, ctx)
    seen = len(web.requests)
    # Without the allow-list entry the guarded client refuses loopback before connecting.
    closed = ToolContext(workspace=ws, outbound=OutboundPolicy())
    await refused("outbound_refused", "web_fetch", {"url": f"http://127.0.0.1:{web.port}/article"}, closed)
    await refused("outbound_refused", "web_fetch", {"url": f"http://localhost:{web.port}/article"}, closed)
    assert len(web.requests) == seen


async def test_web_fetch_stops_at_a_slow_server(ws: Path):
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        ctx = ToolContext(workspace=ws, outbound=OutboundPolicy.parse(f"127.0.0.1:{port}"), fetch_timeout=0.5)
        started = time.monotonic()
        await refused("timeout", "web_fetch", {"url": f"http://127.0.0.1:{port}/"}, ctx)
        assert time.monotonic() - started < 3
    finally:
        server.close()

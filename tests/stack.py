"""The whole system as a user runs it: ``hermes up`` as a subprocess with its own HERMES_HOME and ports,
plus helpers to read a thread's SSE stream and to find leftover processes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hermes_cli.natsserver import free_port


def processes_with_home(home: Path) -> list[int]:
    """PIDs of live processes whose environment names this HERMES_HOME (Linux /proc)."""
    marker = f"HERMES_HOME={home}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().split()[2]
        except OSError:
            continue
        if marker in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def sse_events(client: httpx.Client, url: str, until: set[str], timeout_s: float) -> list[tuple[str, dict]]:
    """Read a thread's SSE stream until one of the ``until`` event types arrives; returns (type, data) pairs.
    Raises AssertionError when none arrives within ``timeout_s`` seconds."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", url, timeout=httpx.Timeout(timeout_s, connect=5)) as response:
        assert response.status_code == 200
        kind = None
        for line in response.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind:
                events.append((kind, json.loads(line.split(":", 1)[1])))
                if kind in until:
                    return events
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"none of {until} within {timeout_s}s; got {[k for k, _ in events]}")


class HermesUp:
    """``python -m hermes_cli up`` in ``tmp_path``: HERMES_HOME ``tmp_path/home``, free web and NATS ports,
    output in ``tmp_path/up.log``. ``env`` adds or overrides variables."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.home = tmp_path / "home"
        self.log_path = tmp_path / "up.log"
        self.web_port = free_port()
        self.env = dict(
            os.environ,
            HERMES_HOME=str(self.home),
            HERMES_WEB_PORT=str(self.web_port),
            HERMES_NATS_PORT=str(free_port()),
        )
        self.env.pop("NATS_URL", None)
        self.env.update(env)
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def admin_seed(self) -> Path:
        """The ``admin`` role's NKey seed ``up`` generated (a test or bench that talks to the bus directly)."""
        return self.home / "credentials" / "admin.nk"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> HermesUp:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hermes_cli", "up"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def wait_healthy(self, client: httpx.Client, timeout_s: float = 120) -> None:
        """Until ``/api/system/health`` answers 200; AssertionError with the log's tail otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            try:
                if client.get(f"{self.base_url}/api/system/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"not healthy within {timeout_s}s\n{self.log_tail()}")

    def metrics_ports(self) -> dict[str, int]:
        """Service name → metrics port, from the line ``up`` prints at start."""
        match = re.search(r"Prometheus /metrics: (.*)", self.log_text())
        assert match, self.log_tail()
        return {name: int(port) for name, port in re.findall(r"([\w-]+) :(\d+)", match.group(1))}

    def supervisor_metrics(self) -> str:
        """The supervisor's ``/metrics`` (exits, restarts, give-ups of the supervised processes)."""
        return httpx.get(f"http://127.0.0.1:{self.metrics_ports()['supervisor']}/metrics", timeout=5).text

    def pids(self) -> dict[str, int]:
        """Program → pid of the processes running now under this HERMES_HOME: ``nats`` and each ``-m`` module
        (``hermes_orchestrator``, ``hermes_edge:<backend>``...)."""
        found = {}
        for pid in processes_with_home(self.home):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and Path(cmd[0].decode()).name == "nats-server":
                found["nats"] = pid
            elif b"-m" in cmd and cmd.index(b"-m") + 1 < len(cmd):
                name = cmd[cmd.index(b"-m") + 1].decode()
                backend = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"HERMES_EDGE_BACKEND=")]
                found[f"{name}:{backend[0]}" if name == "hermes_edge" and backend else name] = pid
        return found

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def all_logs(self) -> str:
        """``up``'s output and every service log file."""
        parts = [self.log_text()]
        logs = self.home / "logs"
        if logs.is_dir():
            parts += [p.read_text(errors="replace") for p in sorted(logs.iterdir())]
        return "\n".join(parts)

    def bus_violations(self) -> list[str]:
        """The embedded nats-server's log lines that report a permissions violation (a service publishing or
        subscribing beyond its grant in ``hermes_proto.access``)."""
        log = self.home / "logs" / "nats.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return [line for line in text.splitlines() if "Violation" in line]

    def stop(self, timeout_s: float = 40, sig: int = signal.SIGINT, check_bus: bool = True) -> int | None:
        """``sig`` (default SIGINT, as Ctrl-C) and wait; returns the exit code. ``check_bus``: then fail when the
        NATS log reports a permissions violation (every run proves the grants suffice)."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        finally:
            if self._log is not None:
                self._log.close()
        violations = self.bus_violations() if check_bus else []
        distinct = sorted({line.split(" - ", 2)[-1] for line in violations})
        assert not violations, "permissions violations on the bus:\n" + "\n".join(distinct[:40])
        return code

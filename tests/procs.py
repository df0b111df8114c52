"""Running Hermes services as real subprocesses in tests (logs captured to files for diagnosis)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path


class ServiceProcess:
    """``python -m <module>`` with ``env``; stdout+stderr go to ``log_dir/<name>.log``."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.module = module
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        """Bytes in the log so far: pass it to :meth:`logged_since` to look at a restart's lines only."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def logged_since(self, offset: int, text: str) -> bool:
        """Whether ``text`` appears in the log after byte ``offset``."""
        if not self.log_path.exists():
            return False
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return text.encode() in log.read()


MODULES = {
    "orchestrator": "hermes_orchestrator",
    "router": "hermes_router",
    "learner": "hermes_learner",
    "edge": "hermes_edge",
    "gateway": "hermes_gateway",
    "notifier": "hermes_notifier",
    "tools": "hermes_tools",
    "notary": "hermes_notary",
}
"""Service name (as the tests call it) → the module ``python -m`` runs."""

READY_MARKERS = {
    "orchestrator": "orchestrator_started",
    "router": "router_started",
    "learner": "learner_started",
    "edge": "edge_started",
    "gateway": "gateway_ready",
    "notifier": "notifier_started",
    "tools": "tools_started",
    "notary": "notary_started",
}
"""The log event each service writes once it serves (read models caught up, consumers running)."""


def model_env(port: int, model: str = "fake") -> dict[str, str]:
    """``BACKEND_TALOS_*``: the ``talos`` backend is the OpenAI-compatible loopback server on ``port``."""
    return {
        "BACKEND_TALOS_TYPE": "openai",
        "BACKEND_TALOS_HOST": "127.0.0.1",
        "BACKEND_TALOS_PORT": str(port),
        "BACKEND_TALOS_MODELS": model,
    }


def service_processes(env: dict[str, str], log_dir: Path, names: Iterable[str]) -> dict[str, ServiceProcess]:
    """One (not yet started) :class:`ServiceProcess` per name of :data:`MODULES`, all with ``env``."""
    return {name: ServiceProcess(name, MODULES[name], env, log_dir) for name in names}


async def start_ready(proc: ServiceProcess, timeout_s: float = 60.0) -> None:
    """Start ``proc`` (named as in :data:`MODULES`) and wait until it logs its :data:`READY_MARKERS` entry anew,
    failing at once if it dies first."""
    from conftest import wait_until

    offset = proc.log_size()
    proc.start()

    def ready() -> bool:
        assert proc.alive(), proc.log_text()[-3000:]
        return proc.logged_since(offset, READY_MARKERS[proc.name])

    await wait_until(ready, timeout_s=timeout_s, interval_s=0.1)

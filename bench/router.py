"""Router overhead benchmark (issue 3): what the backend-router adds to each dispatch.

Starts a real nats-server, the real backend-router and one real talos-edge process in front of a zero-latency
loopback OpenAI-compatible server (``tests/fakes/llm_servers.py openai``), then plays the orchestrator: for N
jobs at concurrency C it appends a ``job_queued`` event and times, in this process (``perf_counter``):

* ``dispatch``: append acknowledged → the router's ``execution_requested`` seen on ``hermes.exec.<backend>``
  (the router's whole decision: read-model snapshot, scoring, budgets, the ``backend_selected`` append and the
  dispatch publish, plus two bus hops);
* ``e2e``: append acknowledged → ``execution_completed`` seen on the thread's subject (router + edge + model);
* ``overhead``: ``e2e`` minus the edge's own ``latency_ms`` for the model call.

Then the same prompts go straight to the provider at the same concurrency, as the edge sends them (streaming,
``include_usage``), timed to ``[DONE]`` (``direct``), and the ratio ``e2e p50 / direct p50`` is reported.

Run (not a test): ``uv run --frozen --group bench python bench/router.py [--concurrency 1,4,16] [--jobs 300]``.
Writes ``bench/results/router.csv``; README.md ("Router overhead") holds measured figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import nats
from jobs import closed_loop, direct_call
from procs import ServiceProcess  # noqa: E402  (tests/ is on sys.path through system)
from report import pct_fields, table, write_csv
from system import MODEL, ROOT, FakeLLMProcess

from hermes_proto import subjects as subj  # noqa: E402
from hermes_proto.base import ChatMessage  # noqa: E402
from hermes_proto.bus import EventStore, ensure_streams  # noqa: E402
from hermes_proto.events import ExecutionCompleted, JobQueued  # noqa: E402
from hermes_proto.execution import ExecutionRequested  # noqa: E402
from hermes_proto.ids import new_id, utcnow  # noqa: E402
from hermes_proto.settings import BusSettings  # noqa: E402

from hermes_cli.natsserver import free_port, nats_server_args, wait_for_port  # noqa: E402

MAX_TOKENS = 64
SUMMARY = [
    ("concurrency", "C"),
    ("ok", "ok"),
    ("failed", "fail"),
    ("jobs_per_s", "jobs/s"),
    ("dispatch_p50_ms", "dispatch p50"),
    ("dispatch_p99_ms", "dispatch p99"),
    ("to_decision_p50_ms", "to decision p50"),
    ("decision_to_request_p50_ms", "decision→request p50"),
    ("overhead_p50_ms", "ovh p50"),
    ("overhead_p99_ms", "ovh p99"),
    ("e2e_p50_ms", "e2e p50"),
    ("e2e_p99_ms", "e2e p99"),
    ("direct_p50_ms", "direct p50"),
    ("direct_p99_ms", "direct p99"),
    ("ratio_e2e_p50", "e2e/direct"),
]


@dataclass
class Waiter:
    """The futures one job's observations resolve: the dispatch and the completion (with ``latency_ms``)."""

    dispatched: asyncio.Future
    completed: asyncio.Future


class Observer:
    """Core NATS subscriptions on the dispatch subject and the completions; resolves each job's waiter with
    the ``perf_counter`` instant the message arrived."""

    def __init__(self) -> None:
        self.waiters: dict[str, Waiter] = {}

    def expect(self, job_id: str) -> Waiter:
        loop = asyncio.get_running_loop()
        self.waiters[job_id] = Waiter(loop.create_future(), loop.create_future())
        return self.waiters[job_id]

    async def start(self, nc: nats.NATS, backend: str) -> None:
        async def dispatched(msg) -> None:
            now = time.perf_counter()
            request = msgspec.json.decode(msg.data, type=ExecutionRequested)
            waiter = self.waiters.get(request.job_id)
            if waiter is not None and not waiter.dispatched.done():
                waiter.dispatched.set_result((now, time.time(), request.requested_at.timestamp()))

        async def completed(msg) -> None:
            now = time.perf_counter()
            event = msgspec.json.decode(msg.data, type=ExecutionCompleted)
            waiter = self.waiters.get(event.job_id)
            if waiter is not None and not waiter.completed.done():
                waiter.completed.set_result((now, event.latency_ms))

        await nc.subscribe(subj.exec_subject(backend), cb=dispatched)
        await nc.subscribe(subj.thread_event("*", ExecutionCompleted), cb=completed)


def prompt(level: int, i: int) -> list[ChatMessage]:
    return [
        ChatMessage(role="system", content="You are a concise planning assistant."),
        ChatMessage(role="user", content=f"Job {level}-{i}: outline three steps to plan a balcony garden."),
    ]


async def routed_job(store: EventStore, observer: Observer, messages: list[ChatMessage]) -> dict[str, float]:
    """One job through the router and edge; ms figures as described in the module docstring."""
    job = JobQueued(
        event_id=new_id(),
        aggregate_id=new_id(),
        occurred_at=utcnow(),
        correlation_id=new_id(),
        job_id=new_id(),
        kind="draft1",
        messages=messages,
        max_tokens=MAX_TOKENS,
    )
    waiter = observer.expect(job.job_id)
    try:
        await store.append([job])
        start = time.perf_counter()
        dispatched_at, seen_wall, decided_wall = await waiter.dispatched
        completed_at, latency_ms = await waiter.completed
    finally:
        observer.waiters.pop(job.job_id, None)
    e2e = (completed_at - start) * 1000
    # Stages by wall clock (one machine, one clock): queued event → the round's decision time (projection
    # and wake-up), decision → request seen here (snapshot read, scoring, append, publish).
    return {
        "dispatch": (dispatched_at - start) * 1000,
        "e2e": e2e,
        "overhead": e2e - latency_ms,
        "to_decision": (decided_wall - job.occurred_at.timestamp()) * 1000,
        "decision_to_request": (seen_wall - decided_wall) * 1000,
    }


def service_env(nats_url: str, home: Path, llm: FakeLLMProcess, max_concurrent: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKEND_", "HERMES_", "TELEGRAM_"))}
    env.update(
        NATS_URL=nats_url,
        HERMES_HOME=str(home),
        METRICS_PORT="0",
        HERMES_BACKENDS_ENABLED="talos",
        HERMES_PRIMARY_BACKEND="talos",
        BACKEND_TALOS_TYPE="openai",
        BACKEND_TALOS_HOST="127.0.0.1",
        BACKEND_TALOS_PORT=str(llm.port),
        BACKEND_TALOS_MODELS=MODEL,
        BACKEND_TALOS_MAX_CONCURRENT=str(max_concurrent),
        HERMES_EDGE_CONCURRENCY=str(max_concurrent),
        HERMES_EDGE_BACKEND="talos",
    )
    return env


async def wait_ready(process: ServiceProcess, marker: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while marker not in process.log_text():
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} did not start:\n{process.log_text()[-3000:]}")
        await asyncio.sleep(0.1)


async def run(args: argparse.Namespace, tmp: Path) -> list[dict]:
    port = free_port()
    nats_proc = subprocess.Popen(
        nats_server_args(port, tmp / "jetstream"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    llm = FakeLLMProcess(tmp / "fake-llm.log").start()
    services: list[ServiceProcess] = []
    try:
        wait_for_port(port)
        nats_url = f"nats://127.0.0.1:{port}"
        nc = await nats.connect(nats_url)
        js = nc.jetstream()
        await ensure_streams(js, BusSettings(nats_url=nats_url))
        env = service_env(nats_url, tmp, llm, args.max_concurrent)
        services = [
            ServiceProcess("router", "hermes_router", env, tmp / "logs").start(),
            ServiceProcess("edge", "hermes_edge", env, tmp / "logs").start(),
        ]
        await asyncio.gather(wait_ready(services[0], "router_started"), wait_ready(services[1], "edge_started"))
        observer = Observer()
        await observer.start(nc, "talos")
        store = EventStore(js, "bench")
        for i in range(args.warmup):  # the edge's first call opens its HTTP pool; the router warms its caches
            await asyncio.wait_for(routed_job(store, observer, prompt(-1, i)), args.timeout)
        rows = []
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            for level, concurrency in enumerate(int(c) for c in args.concurrency.split(",")):
                rows.append(await measure(args, level, concurrency, store, observer, client, llm))
        await nc.close()
        return rows
    finally:
        for service in services:
            service.stop()
        llm.stop()
        nats_proc.terminate()
        nats_proc.wait(timeout=10)


async def measure(
    args: argparse.Namespace,
    level: int,
    concurrency: int,
    store: EventStore,
    observer: Observer,
    client: httpx.AsyncClient,
    llm: FakeLLMProcess,
) -> dict:
    results, wall_s = await closed_loop(
        args.jobs, concurrency, lambda i: routed_job(store, observer, prompt(level, i)), args.timeout
    )
    ok = [r for r in results if isinstance(r, dict)]
    failed = [r for r in results if not isinstance(r, dict)]

    def direct(i: int):
        messages = [msgspec.structs.asdict(m) for m in prompt(level, i)]
        return direct_call(client, llm.base_url, messages, MAX_TOKENS)

    direct_ms, _ = await closed_loop(args.jobs, concurrency, direct, args.timeout)
    direct_ok = [d for d in direct_ms if isinstance(d, float)]
    row = {
        "concurrency": concurrency,
        "jobs": args.jobs,
        "ok": len(ok),
        "failed": len(failed),
        "first_error": failed[0] if failed else "",
        "jobs_per_s": round(len(ok) / wall_s, 1),
    }
    for key in ("dispatch", "overhead", "e2e", "to_decision", "decision_to_request"):
        row.update(pct_fields(key, [r[key] for r in ok]))
    row.update(pct_fields("direct", direct_ok))
    row["ratio_e2e_p50"] = round(row["e2e_p50_ms"] / row["direct_p50_ms"], 1) if direct_ok else None
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated in-flight job counts")
    parser.add_argument("--jobs", type=int, default=300, help="jobs per concurrency level")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=16,
        help="BACKEND_TALOS_MAX_CONCURRENT and HERMES_EDGE_CONCURRENCY (so the limit is not what is measured)",
    )
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per job")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-router-"))
    try:
        rows = asyncio.run(run(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "router.csv")
    print(table(rows, SUMMARY))
    print(f"\nwrote {args.out / 'router.csv'}")


if __name__ == "__main__":
    main()

"""Replay benchmark (issue 4): how fast each read model is rebuilt from the log, and how fast the orchestrator is
back after a kill.

Starts its own nats-server (free port, temp store), appends a realistic log of at least ``--events`` events to
``HERMES_EVENTS`` (complete thread stories as the services write them, see ``bench/threadlog.py``), then:

1. **Replay**, per read model (orchestrator, learner, backend-router), from an empty database:
   * ``in-process``: the service's projection class driven by ``hermes_proto.bus.LogFollower`` in this process
     (fetch, decode, apply, one transaction per batch), timed until its position is the log's last sequence;
   * ``process``: the real service (``python -m hermes_orchestrator`` ...) with a fresh ``HERMES_HOME``, timed
     from spawning it until its log says ``read_models_caught_up`` (Python start-up and imports included);
   * ``process-restart``: the same service restarted on its caught-up database (nothing to apply): its fixed
     start-up cost, subtracted from ``process`` in ``net_events_per_s``.
2. **Recovery**: the orchestrator on its caught-up database is SIGKILLed and restarted ``--repeats`` times; each
   time from spawning it until it answers ``hermes.query.health`` with its position at the log's end (and then a
   ``hermes.query.thread`` for a real thread).

Run (not a test): ``uv run --frozen --group bench python bench/replay.py [--events 100000] [--repeats 5]
[--modes process,in-process]``; ``--profile`` also applies the start of the log (``--profile-events``) held in
memory with each service's ``apply_batch`` (``apply-only``: no bus) and prints a cProfile of it. Writes
``bench/results/replay.csv``; bench/README.md describes the columns.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import nats
import psutil
from system import ROOT  # puts tests/ on sys.path for the imports below

# isort: split
from procs import MODULES, ServiceProcess, model_env  # noqa: E402  (tests/ is on sys.path through system)
from report import percentile, table, write_csv
from threadlog import Mix, build_log

from hermes_proto import subjects as subj  # noqa: E402
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, LogFollower, RawMessage, ensure_streams  # noqa: E402
from hermes_proto.codec import decode_event  # noqa: E402
from hermes_proto.projection import Projection  # noqa: E402
from hermes_proto.queries import ThreadQuery  # noqa: E402
from hermes_proto.settings import BusSettings  # noqa: E402

from hermes_cli.natsserver import free_port, nats_server_args, wait_for_port  # noqa: E402
from hermes_learner.bootstrap import REACTION_EVENTS as LEARNER_REACTION_EVENTS  # noqa: E402
from hermes_learner.bootstrap import REACTOR as LEARNER_REACTOR  # noqa: E402
from hermes_learner.bootstrap import open_read_model as open_learner_read_model  # noqa: E402
from hermes_orchestrator import readmodel as orchestrator_rm  # noqa: E402
from hermes_orchestrator.bootstrap import REACTION_EVENTS  # noqa: E402
from hermes_orchestrator.projection import Projection as OrchestratorProjection  # noqa: E402
from hermes_router import readmodel as router_rm  # noqa: E402
from hermes_router.bootstrap import RouterProjection  # noqa: E402

COMPONENTS = ("orchestrator", "learner", "router")
CAUGHT_UP = "read_models_caught_up"
SUMMARY = [
    ("component", "component"),
    ("mode", "mode"),
    ("events", "events"),
    ("seconds", "s"),
    ("events_per_s", "events/s"),
    ("net_events_per_s", "net events/s"),
    ("first_half_events_per_s", "1st half/s"),
    ("second_half_events_per_s", "2nd half/s"),
    ("cpu_s", "cpu s"),
    ("loadavg_1m", "load1"),
]
RECOVERY = [
    ("component", "component"),
    ("mode", "mode"),
    ("samples", "n"),
    ("p50_ms", "p50 ms"),
    ("max_ms", "max ms"),
    ("min_ms", "min ms"),
    ("thread_query_p50_ms", "thread query p50 ms"),
    ("loadavg_1m", "load1"),
]


@dataclass
class Built:
    """A projection built on a fresh engine: ``apply`` decodes, folds and writes one batch at once (one
    transaction), in the calling thread."""

    projection: Projection
    engine: Any
    apply: Callable[[list[RawMessage]], None]


def build_projection(component: str, url: str, js) -> Built:  # noqa: ANN001
    """The service's own projection on database ``url``, as its bootstrap builds it."""
    if component == "orchestrator":
        engine = orchestrator_rm.make_engine(url)
        projection = OrchestratorProjection(engine, js)
        return Built(projection, engine, projection.apply_now)
    if component == "learner":
        projection = open_learner_read_model(url, js)
        return Built(projection, projection.engine, projection.apply_now)
    engine = router_rm.make_engine(url)
    projection = RouterProjection(engine, js)
    return Built(projection, engine, projection.apply_now)


async def last_sequence(js) -> int:  # noqa: ANN001
    return (await js.stream_info(subj.EVENTS_STREAM)).state.last_seq


def load1() -> float:
    return round(os.getloadavg()[0], 2)


# ---- the log ---------------------------------------------------------------------------------------------


async def publish(js, events: list, batch: int) -> float:  # noqa: ANN001
    """Append ``events`` with ``EventStore.append`` (pipelined publish_async, acks awaited per batch); seconds."""
    store = EventStore(js, "bench")
    start = time.perf_counter()
    for i in range(0, len(events), batch):
        await store.append(events[i : i + batch])
    return time.perf_counter() - start


async def settle_reactors(nc, js) -> dict[str, int]:  # noqa: ANN001
    """Create the orchestrator's and the learner's reactor durables (their services' exact configuration) and ack
    the whole log on them, as on a server where those services were running all along: a service restarted on an
    empty database then rebuilds its read models without also re-running ~40 % of the log through its reactor.
    Returns the messages acked per durable."""
    specs = [
        (LEARNER_REACTOR, [subj.event_type_filter(t) for t in LEARNER_REACTION_EVENTS]),
        ("orchestrator-reactor", [subj.event_type_filter(t) for t in REACTION_EVENTS]),
    ]
    acked = {}

    async def ignore(_delivery) -> None:  # noqa: ANN001
        return None

    for durable, filters in specs:
        runner = ConsumerRunner(
            nc,
            js,
            ConsumerSpec(
                stream=subj.EVENTS_STREAM,
                durable=durable,
                filter_subjects=filters,
                decode=decode_event,
                handler=ignore,
                ordered=True,
            ),
            "bench",
        )
        sub = await runner.subscribe()
        acked[durable] = 0
        while True:
            info = await js.consumer_info(subj.EVENTS_STREAM, durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            try:
                msgs = await sub.fetch(1000, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                await msg.ack()
            await nc.flush()
            acked[durable] += len(msgs)
        await sub.unsubscribe()
    return acked


async def read_log(js, last: int) -> list[list[RawMessage]]:  # noqa: ANN001
    """The whole log in LogFollower's batches (held in memory for the apply-only replay)."""
    batches: list[list[RawMessage]] = []
    done = asyncio.Event()

    async def keep(batch: list[RawMessage]) -> None:
        batches.append(batch)
        if batch[-1][0] >= last:
            done.set()

    follower = LogFollower(js, subj.EVENTS_STREAM, subj.EVENTS_ALL, keep, start_after=0)
    task = asyncio.create_task(follower.run())
    await done.wait()
    follower.stop()
    await task
    return batches


# ---- replays ---------------------------------------------------------------------------------------------


async def replay_in_process(component: str, js, tmp: Path, timeout_s: float) -> dict[str, Any]:  # noqa: ANN001
    last = await last_sequence(js)
    cpu0, start = time.process_time(), time.perf_counter()
    built = build_projection(component, f"sqlite:///{tmp / f'inproc-{component}.db'}", js)
    follower = LogFollower(
        js, subj.EVENTS_STREAM, subj.EVENTS_ALL, built.projection.handle_batch, start_after=built.projection.position
    )
    task = asyncio.create_task(follower.run())
    half = last // 2
    caught_up = await built.projection.wait_for(half, timeout_s)
    halfway, at = time.perf_counter() - start, built.projection.position
    caught_up = caught_up and await built.projection.wait_for(last, timeout_s)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    follower.stop()
    await task
    built.engine.dispose()
    if not caught_up:
        raise RuntimeError(f"{component}: in-process replay stopped at {built.projection.position} of {last}")
    # The rate over each half of the log: does applying slow down as the tables grow?
    return row(
        component,
        "in-process",
        last,
        seconds,
        cpu,
        first_half_events_per_s=round(at / halfway),
        second_half_events_per_s=round((last - at) / (seconds - halfway)),
    )


def replay_apply_only(component: str, batches: list[list[RawMessage]], tmp: Path) -> tuple[dict[str, Any], str]:
    """Apply ``batches`` (the start of the log, held in memory) in this thread with the service's ``apply_batch``
    (no bus, no event loop, no other thread) into a fresh database; then again under cProfile into another one.
    Returns the row (timed without the profiler) and the profile's text."""
    events = sum(len(b) for b in batches)
    timed = build_projection(component, f"sqlite:///{tmp / f'apply-{component}.db'}", None)
    cpu0, start = time.process_time(), time.perf_counter()
    for batch in batches:
        timed.apply(batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    timed.engine.dispose()
    profiled = build_projection(component, f"sqlite:///{tmp / f'profile-{component}.db'}", None)
    profiler = cProfile.Profile()
    profiler.enable()
    for batch in batches:
        profiled.apply(batch)
    profiler.disable()
    profiled.engine.dispose()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write(f"==== {component}: cProfile of apply_batch over the first {events} events ====\n")
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(30)
    return row(component, "apply-only", events, seconds, cpu), out.getvalue()


def service_env(component: str, nats_url: str, home: Path) -> dict[str, str]:
    """The service's environment: this one without Hermes/backend/Telegram settings, plus the bus, its own
    HERMES_HOME and no metrics port. The router gets a ``talos`` backend on a closed port (it never dispatches:
    every job in the log is finished)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BACKEND_", "HERMES_", "TELEGRAM_", "OTEL_")) and k not in ("NATS_URL", "DATABASE_URL")
    }
    env.update(NATS_URL=nats_url, HERMES_HOME=str(home), METRICS_PORT="0")
    if component == "router":
        env.update(model_env(free_port()), HERMES_BACKENDS_ENABLED="talos")
    return env


async def wait_logged(process: ServiceProcess, offset: int, marker: str, timeout_s: float) -> dict[str, Any]:
    """Poll the log (every 10 ms) until a line after ``offset`` contains ``marker``; returns that JSON line."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.logged_since(offset, marker):
            with open(process.log_path, "rb") as fh:
                fh.seek(offset)
                line = next(ln for ln in fh.read().splitlines() if marker.encode() in ln)
            return json.loads(line)
        if not process.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{process.name}: no {marker}:\n{process.log_text()[-3000:]}")
        await asyncio.sleep(0.01)


async def timed_start(process: ServiceProcess, timeout_s: float) -> tuple[float, int, float]:
    """Start ``process``; (seconds until it logs ``read_models_caught_up``, its position, its CPU seconds)."""
    offset = process.log_size()
    start = time.perf_counter()
    process.start()
    line = await wait_logged(process, offset, CAUGHT_UP, timeout_s)
    seconds = time.perf_counter() - start
    times = psutil.Process(process.proc.pid).cpu_times()
    return seconds, int(line["position"]), times.user + times.system


async def replay_process(
    component: str, nats_url: str, tmp: Path, timeout_s: float, keep: bool
) -> tuple[list[dict[str, Any]], ServiceProcess]:
    """The service from an empty database, then restarted on its caught-up one. Left running when ``keep``."""
    process = ServiceProcess(
        component, MODULES[component], service_env(component, nats_url, tmp / f"home-{component}"), tmp / "logs"
    )
    seconds, position, cpu = await timed_start(process, timeout_s)
    rows = [row(component, "process", position, seconds, cpu)]
    process.stop()
    seconds, restart_position, cpu = await timed_start(process, timeout_s)
    rows.append(row(component, "process-restart", 0, seconds, cpu, position=restart_position))
    startup = seconds
    rows[0]["net_events_per_s"] = round(position / max(rows[0]["seconds"] - startup, 1e-9))
    if not keep:
        process.stop()
    return rows, process


async def recovery(
    process: ServiceProcess,
    nc,
    js,
    thread_id: str,
    repeats: int,  # noqa: ANN001
    timeout_s: float,
) -> dict[str, Any]:
    """SIGKILL the running orchestrator, restart it, and time (ms) until ``hermes.query.health`` reports its
    position at the log's end; then until a ``hermes.query.thread`` for ``thread_id`` is answered with it."""
    await until_healthy(nc, process, await last_sequence(js), timeout_s)  # serving before the first kill
    health_ms, thread_ms = [], []
    for _ in range(repeats):
        last = await last_sequence(js)
        process.kill()
        start = time.perf_counter()
        process.start()
        await until_healthy(nc, process, last, timeout_s)
        health_ms.append((time.perf_counter() - start) * 1000)
        reply = await nc.request(subj.QUERY_THREAD, msgspec.json.encode(ThreadQuery(thread_id=thread_id)), timeout=5)
        if not json.loads(reply.data).get("found"):
            raise RuntimeError(f"orchestrator does not know thread {thread_id} after the restart")
        thread_ms.append((time.perf_counter() - start) * 1000)
    return {
        "component": "orchestrator",
        "mode": "recovery-sigkill",
        "events": last,
        "samples": repeats,
        "p50_ms": round(percentile(health_ms, 50), 1),
        "max_ms": round(max(health_ms), 1),
        "min_ms": round(min(health_ms), 1),
        "thread_query_p50_ms": round(percentile(thread_ms, 50), 1),
        "samples_ms": " ".join(f"{v:.0f}" for v in health_ms),
        "seconds": round(percentile(health_ms, 50) / 1000, 3),
        "loadavg_1m": load1(),
    }


async def until_healthy(nc, process: ServiceProcess, last: int, timeout_s: float) -> None:  # noqa: ANN001
    """Ask ``hermes.query.health`` every 10 ms until the answer's position is at least ``last``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"orchestrator died:\n{process.log_text()[-3000:]}")
        try:
            reply = await nc.request(subj.QUERY_HEALTH, b"", timeout=0.25)
            if json.loads(reply.data).get("position", -1) >= last:
                return
        except (TimeoutError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
            pass
        await asyncio.sleep(0.01)
    raise RuntimeError(f"orchestrator not at position {last} within {timeout_s}s")


def row(component: str, mode: str, events: int, seconds: float, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "component": component,
        "mode": mode,
        "events": events,
        "seconds": round(seconds, 3),
        "events_per_s": round(events / seconds) if events else 0,
        "net_events_per_s": "",
        "cpu_s": round(cpu, 2),
        "loadavg_1m": load1(),
        **extra,
    }


# ---- the run ---------------------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, tmp: Path, nats_url: str) -> tuple[list[dict[str, Any]], list[str]]:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js, BusSettings(nats_url=nats_url))
    started = time.perf_counter()
    log = build_log(args.events, seed=args.seed, mix=Mix(workflow=args.workflow_share))
    print(
        f"built {len(log.events)} events in {len(log.threads)} threads in {time.perf_counter() - started:.1f}s: "
        f"{log.counts()}",
        flush=True,
    )
    seconds = await publish(js, log.events, args.publish_batch)
    last = await last_sequence(js)
    print(
        f"appended {last} events in {seconds:.1f}s ({last / seconds:.0f}/s); stream "
        f"{(await js.stream_info(subj.EVENTS_STREAM)).state.bytes / 2**20:.0f} MiB",
        flush=True,
    )
    print(f"reactor durables acked: {await settle_reactors(nc, js)}", flush=True)
    rows: list[dict[str, Any]] = []
    profiles: list[str] = []
    components = [c for c in COMPONENTS if c in args.components.split(",")]
    modes = args.modes.split(",")
    for component in components if "in-process" in modes else []:
        rows.append(await replay_in_process(component, js, tmp, args.timeout))
        print(table([rows[-1]], SUMMARY), flush=True)
    for component in components if "process" in modes else []:
        replayed, process = await replay_process(
            component, nats_url, tmp, args.timeout, keep=component == "orchestrator" and args.repeats > 0
        )
        rows += replayed
        print(table(replayed, SUMMARY), flush=True)
        if process.alive():
            try:
                rows.append(await recovery(process, nc, js, log.threads[-1], args.repeats, args.timeout))
                print(table([rows[-1]], RECOVERY), flush=True)
            finally:
                process.stop()
    if args.profile:
        batches = await read_log(js, await last_sequence(js))
        prefix, taken = [], 0
        for batch in batches:
            if taken >= args.profile_events:
                break
            prefix.append(batch)
            taken += len(batch)
        for component in components:
            result, text = replay_apply_only(component, prefix, tmp)
            rows.append(result)
            profiles.append(text)
            print(table([result], SUMMARY), flush=True)
    await nc.close()
    return rows, profiles


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="at least this many events in the log")
    parser.add_argument("--repeats", type=int, default=5, help="orchestrator kill/restart cycles (0: none)")
    parser.add_argument("--components", default=",".join(COMPONENTS), help="comma-separated read models to replay")
    parser.add_argument(
        "--modes",
        default="process",
        help="comma-separated replays: process (the real service), in-process (its projection and "
        "LogFollower in this process), or none",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated stories")
    parser.add_argument("--workflow-share", type=float, default=Mix().workflow, help="share of workflow threads")
    parser.add_argument("--publish-batch", type=int, default=2000, help="events per pipelined append")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per replay or restart")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also replay each read model from the log in memory (apply-only) and print a cProfile",
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=20_000,
        help="--profile: apply (timed, then under cProfile) the first this many events per read model",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, databases, store)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-replay-"))
    print(
        f"load average before start (1/5/15 min): {os.getloadavg()}; {psutil.cpu_count()} CPUs; "
        f"{platform.platform()}; tmp {tmp}",
        flush=True,
    )
    started = time.monotonic()
    port = free_port()
    server = subprocess.Popen(
        nats_server_args(port, tmp / "jetstream"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        rows, profiles = asyncio.run(measure(args, tmp, f"nats://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(timeout=10)
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    write_csv(rows, args.out / "replay.csv")
    print(
        f"\nReplay from an empty database, {rows[0]['events']} events; total run {time.monotonic() - started:.0f}s; "
        f"load average now {os.getloadavg()}\n"
    )
    print(table([r for r in rows if not r["mode"].startswith("recovery")], SUMMARY))
    recovered = [r for r in rows if r["mode"].startswith("recovery")]
    if recovered:
        print("\nOrchestrator recovery after SIGKILL (spawn → health answered at the log's end)")
        print(table(recovered, RECOVERY))
    for text in profiles:
        print("\n" + text)
    print(f"\nwrote {args.out / 'replay.csv'}")


if __name__ == "__main__":
    main()

"""Pipeline overhead benchmark (issue 9, step 1: measure).

Starts the real system (``hermes up``: nats-server + the six services as processes) against a zero-latency
loopback OpenAI-compatible server, then for each concurrency level runs N ideas through
``POST /api/submit`` and measures, per job, the time from the 202 to the result being visible minus the
backend's own time for that job (the job's ``latency_ms``). HERMES_MAX_QUESTIONS=0, so each thread is
exactly one draft-1 job. The same prompts are then sent straight to the backend at the same concurrency.

Run: ``uv run --frozen --group bench python bench/pipeline.py [--concurrency 1,10,50,100] [--jobs 200]``.
Writes ``bench/results/pipeline.csv`` and ``bench/results/latency.png`` and prints a summary table;
bench/README.md explains every column.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from jobs import STAGES, JobSample, closed_loop, direct_call, poll_job, sse_job, thread_event_types
from report import pct_fields, percentile, plot_latency, table, write_csv
from system import (
    STREAMS,
    CoreTap,
    FakeLLMProcess,
    ProcessProbe,
    StreamCounter,
    idle_cpu,
    processes_with_home,
    start_stack,
)

SUMMARY = [
    ("concurrency", "C"),
    ("ok", "ok"),
    ("failed", "fail"),
    ("jobs_per_s", "jobs/s"),
    ("overhead_p50_ms", "ovh p50"),
    ("overhead_p95_ms", "ovh p95"),
    ("overhead_p99_ms", "ovh p99"),
    ("rm_overhead_p50_ms", "rm p50"),
    ("rm_overhead_p99_ms", "rm p99"),
    ("backend_p50_ms", "backend p50"),
    ("e2e_p50_ms", "e2e p50"),
    ("direct_p50_ms", "direct p50"),
    ("ratio_e2e_p50", "e2e/direct"),
    ("direct_jobs_per_s", "direct/s"),
    ("ttft_delta_p50_ms", "ttft Δ p50"),
    ("js_msgs_per_job", "js msg/job"),
    ("loadavg_1m", "load1"),
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,10,50,100", help="comma-separated client counts")
    parser.add_argument("--jobs", type=int, default=200, help="jobs per concurrency level")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per level: keep submitting for this long instead of --jobs (sustained run)",
    )
    parser.add_argument(
        "--observe", choices=("sse", "poll"), default="sse", help="how completion is observed (see README)"
    )
    parser.add_argument("--poll-interval-ms", type=float, default=50.0)
    parser.add_argument(
        "--edge-concurrency",
        type=int,
        default=None,
        help="HERMES_EDGE_CONCURRENCY for the edge and BACKEND_TALOS_MAX_CONCURRENT for the "
        "router (default: the services' own, 1)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured jobs before the first level")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per job before it counts as failed")
    parser.add_argument(
        "--nats-tap",
        action="store_true",
        help="also count core NATS messages with a '>' subscription (adds load; off by default)",
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp HERMES_HOME (logs, databases)")
    return parser.parse_args()


def idea_text(level: int, i: int) -> str:
    return f"Help me plan a small vegetable garden on my city balcony (bench run c{level} #{i})"


async def run_level(
    args: argparse.Namespace,
    level: int,
    client: httpx.AsyncClient,
    direct: httpx.AsyncClient,
    llm_url: str,
    probe: ProcessProbe,
    counter: StreamCounter,
    tap: CoreTap | None,
) -> dict[str, Any]:
    """One concurrency level: N jobs through the system, then the same prompts directly to the backend."""
    if args.observe == "sse":
        job = lambda i: sse_job(client, idea_text(level, i))  # noqa: E731
    else:
        job = lambda i: poll_job(client, idea_text(level, i), args.poll_interval_ms / 1000)  # noqa: E731
    seq0, cpu0, tap0 = await counter.last_seqs(), probe.cpu_seconds(), tap.snapshot() if tap else {}
    probe.reset_peaks()
    results, wall = await closed_loop(args.jobs, level, job, args.timeout, args.duration)
    cpu1, peaks = probe.cpu_seconds(), dict(probe.peak_rss)
    await asyncio.sleep(0.5)  # let trailing events (thread_completed, learner) land before counting
    seq1, tap1 = await counter.last_seqs(), tap.snapshot() if tap else {}
    load_1m = os.getloadavg()[0]

    samples = [r for r in results if isinstance(r, JobSample)]
    errors = [r for r in results if isinstance(r, str)]
    prompts = [
        (s.messages or [{"role": "user", "content": idea_text(level, i)}], s.max_tokens) for i, s in enumerate(samples)
    ]
    direct_results, direct_wall = await closed_loop(
        len(prompts), level, lambda i: direct_call(direct, llm_url, *prompts[i]), args.timeout
    )
    direct_ms = [r for r in direct_results if isinstance(r, float)]

    row: dict[str, Any] = {
        "concurrency": level,
        "jobs": len(results),
        "ok": len(samples),
        "failed": len(errors),
        "wall_s": round(wall, 2),
        "jobs_per_s": round(len(samples) / wall, 2),
        "loadavg_1m": round(load_1m, 2),
    }
    row |= latency_fields(samples, direct_ms, direct_wall)
    row["ratio_throughput"] = round(row["direct_jobs_per_s"] / row["jobs_per_s"], 1) if samples else float("nan")
    n_ok = max(len(samples), 1)
    row |= count_fields(
        {name.removeprefix("HERMES_").lower(): seq1[name] - seq0[name] for name in STREAMS}, "js", "msgs", n_ok
    )
    if tap:
        row |= count_fields(
            {k: tap1.get(k, 0) - tap0.get(k, 0) for k in sorted(set(tap1) | set(tap0))}, "core", "total", n_ok
        )
    for name in sorted(cpu1):
        row[f"cpu_ms_per_job_{name}"] = round((cpu1[name] - cpu0.get(name, 0.0)) * 1000 / n_ok, 2)
    for name in sorted(peaks):
        row[f"peak_rss_mb_{name}"] = round(peaks[name] / 2**20, 1)
    if errors:
        row["first_error"] = errors[0]
    return row


def latency_fields(samples: list[JobSample], direct_ms: list[float], direct_wall: float) -> dict[str, Any]:
    """Percentiles (ms) of overhead, read-model overhead, backend, submit, end to end, direct calls, TTFT delta
    and the per-stage p50s; direct calls/s; the end-to-end/direct p50 ratio."""
    row = pct_fields("overhead", [s.overhead_ms for s in samples])
    row |= pct_fields("rm_overhead", [s.readmodel_overhead_ms for s in samples if s.readmodel_ms is not None])
    row |= pct_fields("backend", [s.backend_ms for s in samples], (50, 99))
    row |= pct_fields("submit", [s.submit_ms for s in samples], (50, 99))
    row |= pct_fields("e2e", [s.e2e_ms for s in samples], (50, 99))
    row |= pct_fields("direct", direct_ms, (50, 95, 99))
    row["direct_jobs_per_s"] = round(len(direct_ms) / direct_wall, 1) if direct_wall else 0.0
    row["ratio_e2e_p50"] = round(row["e2e_p50_ms"] / row["direct_p50_ms"], 1) if direct_ms else float("nan")
    ttft = [
        s.token_seen_ms - s.first_token_ms
        for s in samples
        if s.token_seen_ms is not None and s.first_token_ms is not None
    ]
    row["ttft_samples"] = len(ttft)
    row["ttft_delta_p50_ms"] = round(percentile(ttft, 50), 2)
    for _, _, stage in STAGES:
        row[f"stage_{stage}_p50_ms"] = round(percentile([s.stages[stage] for s in samples if stage in s.stages], 50), 2)
    return row


def count_fields(deltas: dict[str, int], prefix: str, total: str, n_ok: int) -> dict[str, float]:
    """``<prefix>_<total>_per_job`` (sum) first, then ``<prefix>_<key>_per_job`` for each message count."""
    row = {f"{prefix}_{total}_per_job": round(sum(deltas.values()) / n_ok, 2)}
    for key, delta in deltas.items():
        row[f"{prefix}_{key}_per_job"] = round(delta / n_ok, 2)
    return row


async def warm_up(args: argparse.Namespace, client: httpx.AsyncClient) -> None:
    """Unmeasured jobs (one at a time) until ``args.warmup`` succeeded: the router must first see the
    edge's heartbeat before it can route. Raises RuntimeError after 90 s without success."""
    deadline, done, sample = time.monotonic() + 90, 0, None
    while done < max(args.warmup, 1):
        try:
            sample = await asyncio.wait_for(sse_job(client, idea_text(0, done)), 30)
            done += 1
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"warm-up job never completed: {exc}") from exc
            await asyncio.sleep(1)
    kinds = await asyncio.wait_for(thread_event_types(client, sample.thread_id), 30)
    print(f"one thread's events ({len(kinds)}): {', '.join(kinds)}", flush=True)


async def measure(args: argparse.Namespace, levels: list[int], up, llm: FakeLLMProcess) -> list[dict[str, Any]]:
    # Idle pooled connections are dropped after 2 s, before uvicorn's 5 s keep-alive timeout closes them
    # server-side: with httpx's default (also 5 s) a POST could be sent on a connection the server was
    # closing and fail with ReadError (seen once in 1000 jobs at C=100).
    pool = 2 * max(levels) + 20
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool, keepalive_expiry=2.0)
    timeout = httpx.Timeout(args.timeout, connect=10)
    nats_url = f"nats://127.0.0.1:{up.env['HERMES_NATS_PORT']}"
    async with (
        httpx.AsyncClient(base_url=up.base_url, timeout=timeout, limits=limits) as client,
        httpx.AsyncClient(timeout=timeout, limits=limits) as direct,
        StreamCounter(nats_url, up.admin_seed) as counter,
    ):
        await warm_up(args, client)
        probe = ProcessProbe.of(up.home, {"fake-llm": llm.proc.pid, "bench-client": os.getpid()})
        print("processes measured:", {n: [p.pid for p in ps] for n, ps in probe.procs.items()}, flush=True)
        print("idle CPU ms/s:", await idle_cpu(probe), flush=True)
        rest = {name: round(rss / 2**20, 1) for name, rss in probe.peak_rss.items()}
        tap = None
        if args.nats_tap:
            tap = CoreTap()
            await tap.start(counter.nc)
        rows = []
        for level in levels:
            row = await run_level(args, level, client, direct, llm.base_url, probe, counter, tap)
            row |= {f"rest_rss_mb_{name}": mb for name, mb in rest.items()}
            print(
                f"C={level}: {row['ok']} ok, {row['failed']} failed, {row['jobs_per_s']} jobs/s, overhead p50 "
                f"{row['overhead_p50_ms']} ms p99 {row['overhead_p99_ms']} ms",
                flush=True,
            )
            rows.append(row)
        probe.stop()
        return rows


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-"))
    llm = FakeLLMProcess(tmp / "llm.log").start()
    up = start_stack(tmp, llm, args.edge_concurrency)
    started = time.monotonic()
    print(f"load average before start (1/5/15 min): {os.getloadavg()}", flush=True)
    try:
        with httpx.Client(timeout=10) as sync_client:
            up.wait_healthy(sync_client)
        print(f"stack healthy after {time.monotonic() - started:.1f}s; home {up.home}", flush=True)
        rows = asyncio.run(measure(args, levels, up, llm))
    finally:
        up.stop()
        llm.stop()
        left = processes_with_home(up.home)
        if left:
            print(f"WARNING: processes left behind: {left}")
        if not args.keep_home:
            shutil.rmtree(tmp, ignore_errors=True)
    edge = args.edge_concurrency or "service default"
    size = f"{args.duration:g} s" if args.duration is not None else f"N={args.jobs}"
    title = (
        f"Hermes pipeline overhead, zero-latency backend, 1 draft-1 job/thread "
        f"(HERMES_MAX_QUESTIONS=0), observe={args.observe}, edge concurrency={edge}, {size}/level, "
        f"{psutil.cpu_count()} CPUs"
    )
    write_csv(rows, args.out / "pipeline.csv")
    plot_latency(rows, args.out / "latency.png", title)
    print(f"\n{title}\n{platform.platform()}; total run {time.monotonic() - started:.0f}s\n")
    print(table(rows, SUMMARY))
    cpu_cols = [(k, k.removeprefix("cpu_ms_per_job_")) for k in rows[0] if k.startswith("cpu_ms_per_job_")]
    rss_cols = [(k, k.removeprefix("peak_rss_mb_")) for k in rows[0] if k.startswith("peak_rss_mb_")]
    print("\nCPU ms per job (user+system, whole level incl. idle work)")
    print(table(rows, [("concurrency", "C"), *cpu_cols]))
    rest_cols = [(k, k.removeprefix("rest_rss_mb_")) for k in rows[0] if k.startswith("rest_rss_mb_")]
    print("\nRSS MB at rest (after the warm-up, before the first level)")
    print(table(rows[:1], rest_cols))
    print("\nPeak RSS MB during the level (sampled every 0.2 s)")
    print(table(rows, [("concurrency", "C"), *rss_cols]))
    stage_cols = [(k, k.removeprefix("stage_").removesuffix("_p50_ms")) for k in rows[0] if k.startswith("stage_")]
    print("\nWhere the time goes: p50 ms per stage (event occurred_at differences; SSE mode only)")
    print(table(rows, [("concurrency", "C"), *stage_cols]))
    js_cols = [(k, k.removeprefix("js_").removesuffix("_per_job")) for k in rows[0] if k.startswith("js_")]
    print("\nJetStream messages appended per job (stream last_seq deltas)")
    print(table(rows, [("concurrency", "C"), *js_cols]))
    core_cols = [(k, k.removeprefix("core_").removesuffix("_per_job")) for k in rows[0] if k.startswith("core_")]
    if core_cols:
        print("\nCore NATS messages per job seen by a '>' tap, by subject prefix")
        print(table(rows, [("concurrency", "C"), *core_cols]))
    print(f"\nwrote {args.out / 'pipeline.csv'} and {args.out / 'latency.png'}")


if __name__ == "__main__":
    main()

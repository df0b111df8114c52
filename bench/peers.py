"""Peers benchmark (issue 20): Hermes's ``POST /v1/chat/completions`` against the LiteLLM proxy and the backend.

Starts one zero-latency loopback OpenAI-compatible backend (tests/fakes/llm_servers.py), the whole Hermes system
(``hermes up`` wired to it, as bench/pipeline.py does) and the LiteLLM proxy (1 worker, master key, no database,
one model routed to the same backend), then at each concurrency level sends the same chat completions to each
side in turn from one aiohttp client: the backend directly, LiteLLM, Hermes. Per side and level: requests/s,
latency percentiles, overhead against the direct call at the same level, errors, and CPU per request summed over
the side's processes (psutil).

Run: ``uv run --frozen --group bench python bench/peers.py [--concurrency 1,10,50] [--requests 500] [--stream]``.
Writes ``bench/results/peers.csv`` (``peers-stream.csv`` with ``--stream``) and the PNG beside it, and prints the
tables; bench/README.md ("Peers") defines every column.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from chat_load import chat_call, new_session, request_body
from jobs import closed_loop
from litellm_proxy import DEFAULT_VENV, REQUIREMENTS, LiteLLMProxy, ensure_venv
from report import pct_fields, plot_peers, table, write_csv
from system import MODEL, ROOT, FakeLLMProcess, ProcessProbe, idle_cpu, processes_with_home, start_stack

SIDES = ("direct", "litellm", "hermes")
BACKEND, CLIENT, LITELLM = "fake-llm", "bench-client", "litellm"
SUMMARY = [
    ("concurrency", "C"),
    ("side", "side"),
    ("ok", "ok"),
    ("errors", "err"),
    ("requests_per_s", "req/s"),
    ("latency_p50_ms", "p50"),
    ("latency_p99_ms", "p99"),
    ("overhead_p50_ms", "ovh p50"),
    ("overhead_p99_ms", "ovh p99"),
    ("cpu_ms_per_req", "cpu ms/req"),
    ("backend_cpu_ms_per_req", "backend cpu"),
    ("client_cpu_ms_per_req", "client cpu"),
    ("peak_rss_mb", "peak MB"),
    ("loadavg_1m", "load1"),
]
STREAM_SUMMARY = [("ttft_p50_ms", "ttft p50"), ("ttft_p99_ms", "ttft p99"), ("ttft_overhead_p50_ms", "ttft ovh p50")]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,10,50", help="comma-separated client counts")
    parser.add_argument("--requests", type=int, default=500, help="measured requests per side and level")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="seconds per side and level: keep sending for this long instead of --requests",
    )
    parser.add_argument("--stream", action="store_true", help="stream: true (also times the first token)")
    parser.add_argument("--sides", default=",".join(SIDES), help="which sides, in the order run at each level")
    parser.add_argument(
        "--warmup",
        type=int,
        default=20,
        help="unmeasured requests per side before each level (at least C, so every connection of the pool is open)",
    )
    parser.add_argument(
        "--edge-concurrency",
        type=int,
        default=16,
        help="HERMES_EDGE_CONCURRENCY and BACKEND_TALOS_MAX_CONCURRENT (the services' default, 1, "
        "would queue every call behind the previous one at the edge)",
    )
    parser.add_argument(
        "--settle-max",
        type=float,
        default=30.0,
        help="seconds to wait at most, after a side's level, for its processes to go quiet",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it is an error")
    parser.add_argument("--litellm-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--keep-home", action="store_true", help="keep the temp dir (every service's log)")
    return parser.parse_args()


def prompt(level: int, i: int) -> str:
    """The i-th prompt of a level: the same text for every side."""
    return f"How deep should a pot for balcony tomatoes be? (peers c{level} #{i})"


async def settle(probe: ProcessProbe, names: list[str], idle_ms_per_s: float, max_s: float) -> float:
    """Wait until ``names``' summed CPU over the last 0.5 s runs at most max(2 × idle, 20 ms/s) (the work the
    requests left behind, e.g. projections, is done) or ``max_s`` passed; returns the seconds waited."""
    start, limit = time.monotonic(), max(2 * idle_ms_per_s, 20.0)
    last = sum(probe.cpu_seconds()[n] for n in names)
    while time.monotonic() - start < max_s:
        await asyncio.sleep(0.5)
        now = sum(probe.cpu_seconds()[n] for n in names)
        if (now - last) * 1000 / 0.5 <= limit:
            break
        last = now
    return time.monotonic() - start


async def wait_ready(session, url: str, stream: bool, timeout_s: float = 120) -> None:
    """Until one chat completion succeeds (Hermes answers 404 ``model_not_found`` until the router has seen the
    edge's heartbeat). Raises RuntimeError with the last error after ``timeout_s``."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(chat_call(session, url, request_body(prompt(0, 0), stream), stream), 30)
            return
        except Exception as exc:  # retried until the deadline; the last one is reported
            last = exc
            await asyncio.sleep(1)
    raise RuntimeError(f"{url} never answered: {last!r}")


def error_fields(errors: list[str]) -> dict[str, Any]:
    """``error_kinds``: counts by the text before the second ':' (e.g. ``ChatError: HTTP 502``), and the first."""
    if not errors:
        return {}
    kinds = collections.Counter(":".join(e.split(":")[:2]) for e in errors)
    return {"error_kinds": "; ".join(f"{k} x{n}" for k, n in kinds.most_common()), "first_error": errors[0]}


async def run_side(
    args: argparse.Namespace,
    level: int,
    side: str,
    url: str,
    session,
    probe: ProcessProbe,
    groups: dict[str, list[str]],
    idle: dict[str, float],
) -> dict[str, Any]:
    """Warm-up, then ``args.requests`` (or ``args.duration`` s of) calls at ``level`` concurrent clients; CPU of
    the side's processes from the start of the measured calls until they are quiet again."""
    call = lambda i: chat_call(session, url, request_body(prompt(level, i), args.stream), args.stream)  # noqa: E731
    await closed_loop(max(args.warmup, level), level, lambda i: call(-1 - i), args.timeout)
    names = groups[side]
    cpu0 = probe.cpu_seconds()
    probe.reset_peaks()
    results, wall = await closed_loop(args.requests, level, call, args.timeout, args.duration)
    cpu_end, peaks = probe.cpu_seconds(), dict(probe.peak_rss)
    load_1m = os.getloadavg()[0]
    settled_s = await settle(probe, names + [BACKEND], sum(idle[n] for n in names + [BACKEND]), args.settle_max)
    cpu1 = probe.cpu_seconds()

    samples = [r for r in results if not isinstance(r, str)]
    ok = max(len(samples), 1)
    per_req = lambda name, end: round((end[name] - cpu0[name]) * 1000 / ok, 2)  # noqa: E731
    row: dict[str, Any] = {
        "concurrency": level,
        "side": side,
        "requests": len(results),
        "ok": len(samples),
        "errors": len(results) - len(samples),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(samples) / wall, 1),
    }
    row |= pct_fields("latency", [s.latency_ms for s in samples])
    if args.stream:
        row |= pct_fields("ttft", [s.ttft_ms for s in samples], (50, 99))
    row["cpu_ms_per_req"] = round(sum(per_req(n, cpu1) for n in names), 2) if names else float("nan")
    row["cpu_ms_per_req_in_level"] = round(sum(per_req(n, cpu_end) for n in names), 2) if names else float("nan")
    row["settle_s"] = round(settled_s, 1)
    row["backend_cpu_ms_per_req"] = per_req(BACKEND, cpu1)
    row["client_cpu_ms_per_req"] = per_req(CLIENT, cpu_end)
    row["peak_rss_mb"] = round(sum(peaks.get(n, 0) for n in names) / 2**20, 1) if names else float("nan")
    if side == "hermes":
        row |= {f"hermes_cpu_ms_per_req_{n}": per_req(n, cpu1) for n in sorted(names)}
    row["loadavg_1m"] = round(load_1m, 2)
    return row | error_fields([r for r in results if isinstance(r, str)])


def add_overheads(rows: list[dict[str, Any]]) -> None:
    """Overhead of each side = its percentile minus the direct side's same percentile at the same level (a
    difference of percentiles: requests cannot be paired across sides)."""
    direct = next((r for r in rows if r["side"] == "direct"), None)
    for row in rows:
        for key in ("latency_p50_ms", "latency_p99_ms", "ttft_p50_ms", "ttft_p99_ms"):
            if key in row:
                base = direct[key] if direct is not None and row["side"] != "direct" else float("nan")
                name = key.replace("latency_", "overhead_").replace("ttft_", "ttft_overhead_")
                row[name] = round(row[key] - base, 2)


async def measure(
    args: argparse.Namespace, levels: list[int], sides: list[str], up, proxy: LiteLLMProxy, llm: FakeLLMProcess
) -> list[dict[str, Any]]:
    urls = {"direct": llm.base_url, "litellm": proxy.base_url, "hermes": up.base_url}
    pool = max(levels) + 10
    sessions = {side: new_session(pool, proxy.master_key) for side in sides}
    try:
        for side in sides:
            await wait_ready(sessions[side], f"{urls[side]}/v1/chat/completions", args.stream)
        probe = ProcessProbe.of(up.home, {BACKEND: llm.proc.pid, CLIENT: os.getpid()})
        hermes_names = [n for n in probe.procs if n not in (BACKEND, CLIENT)]
        probe.procs[LITELLM] = proxy.processes()
        groups = {"direct": [], "litellm": [LITELLM], "hermes": hermes_names}
        print("processes measured:", {n: [p.pid for p in ps] for n, ps in probe.procs.items()}, flush=True)
        idle = await idle_cpu(probe)
        print("idle CPU ms/s:", idle, flush=True)
        rows = []
        for level in levels:
            level_rows = []
            for side in sides:
                row = await run_side(
                    args, level, side, f"{urls[side]}/v1/chat/completions", sessions[side], probe, groups, idle
                )
                print(
                    f"C={level} {side}: {row['ok']} ok, {row['errors']} errors, {row['requests_per_s']} req/s, "
                    f"p50 {row['latency_p50_ms']} ms, p99 {row['latency_p99_ms']} ms, "
                    f"cpu {row['cpu_ms_per_req']} ms/req",
                    flush=True,
                )
                level_rows.append(row)
            add_overheads(level_rows)
            rows += level_rows
        probe.stop()
        return rows
    finally:
        for session in sessions.values():
            await session.close()


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """Issue 20's two targets, when their levels were measured."""
    at = {(r["concurrency"], r["side"]): r for r in rows}
    lines = []
    if (1, "hermes") in at and (1, "litellm") in at:
        h, lite = at[1, "hermes"]["overhead_p50_ms"], at[1, "litellm"]["overhead_p50_ms"]
        lines.append(
            f"overhead p50 at 1 client: Hermes {h:.1f} ms, LiteLLM {lite:.1f} ms -> "
            f"{'met' if h <= lite else 'not met'} (target: Hermes <= LiteLLM)"
        )
    if (50, "hermes") in at and (50, "litellm") in at:
        h, lite = at[50, "hermes"]["requests_per_s"], at[50, "litellm"]["requests_per_s"]
        lines.append(
            f"requests/s at 50 clients: Hermes {h:.1f}, LiteLLM {lite:.1f} ({h / lite:.2f}x) -> "
            f"{'met' if h >= lite else 'not met'} (target: Hermes >= LiteLLM, aim 2x)"
        )
    return lines


def litellm_version() -> str:
    return next(
        (line.split("==")[1] for line in REQUIREMENTS.read_text().splitlines() if line.startswith("litellm==")), "?"
    )


def print_tables(rows: list[dict[str, Any]], stream: bool) -> None:
    print(table(rows, SUMMARY + (STREAM_SUMMARY if stream else [])))
    hermes = [r for r in rows if r["side"] == "hermes"]
    cols = [
        (k, k.removeprefix("hermes_cpu_ms_per_req_"))
        for k in (hermes[0] if hermes else {})
        if k.startswith("hermes_cpu_ms_per_req_")
    ]
    if cols:
        print("\nHermes CPU ms per request by process (user+system, measured calls until quiet)")
        print(table(hermes, [("concurrency", "C"), *cols]))
    errors = [r for r in rows if r.get("error_kinds")]
    for r in errors:
        print(f"errors C={r['concurrency']} {r['side']}: {r['error_kinds']}; first: {r['first_error']}")
    print("\n" + "\n".join(targets(rows)))


def main() -> None:
    args = parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    sides = args.sides.split(",")
    started = time.monotonic()
    executable = ensure_venv(args.litellm_venv)
    tmp = Path(tempfile.mkdtemp(prefix="hermes-peers-"))
    llm = FakeLLMProcess(tmp / "llm.log").start()
    proxy, up = LiteLLMProxy(executable, tmp, llm.base_url, MODEL), None
    print(f"load average before start (1/5/15 min): {os.getloadavg()}", flush=True)
    try:
        proxy.start()
        up = start_stack(tmp, llm, args.edge_concurrency)
        with httpx.Client(timeout=10) as sync_client:
            up.wait_healthy(sync_client)
        print(
            f"LiteLLM {litellm_version()} and Hermes up after {time.monotonic() - started:.1f}s; tmp {tmp}", flush=True
        )
        rows = asyncio.run(measure(args, levels, sides, up, proxy, llm))
        if any(r["side"] == "hermes" and r["errors"] for r in rows):
            lines = [line for line in up.all_logs().splitlines() if "error" in line.lower()]
            print("Hermes log lines with 'error' (last 20):\n" + "\n".join(lines[-20:]))
    finally:
        if up is not None:
            up.stop()
            left = processes_with_home(up.home)
            if left:
                print(f"WARNING: processes left behind: {left}")
        proxy.stop()
        llm.stop()
        if not args.keep_home:
            shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    for row in rows:
        row |= {"hermes_commit": commit, "litellm_version": litellm_version(), "stream": args.stream}
    size = f"{args.duration:g} s" if args.duration is not None else f"N={args.requests}"
    title = (
        f"/v1/chat/completions: Hermes {commit} vs LiteLLM {litellm_version()} (1 worker) vs direct, "
        f"zero-latency backend, {'streaming' if args.stream else 'non-streaming'}, {size}/side/level, "
        f"edge concurrency {args.edge_concurrency}, {psutil.cpu_count()} CPUs"
    )
    name = "peers-stream" if args.stream else "peers"
    write_csv(rows, args.out / f"{name}.csv")
    plot_peers(rows, args.out / f"{name}.png", title)
    print(f"\n{title}\n{platform.platform()}; total run {time.monotonic() - started:.0f}s\n")
    print_tables(rows, args.stream)
    print(f"\nwrote {args.out / f'{name}.csv'} and {args.out / f'{name}.png'}")


if __name__ == "__main__":
    main()

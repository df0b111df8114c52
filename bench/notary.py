"""Notary benchmark (issue 25): what the tamper-evident log costs.

Starts its own nats-server (free port, temp store), appends a realistic log of ``--events`` events (whole thread
stories, ``bench/threadlog.py``) with the notary NOT running, then:

1. **catch-up**: starts the real notary (``python -m hermes_notary``, checkpoint every ``--every`` events) and times
   it from spawn until its last checkpoint covers the whole log: leaves hashed and stored, roots computed, entries
   carried, BIP-340 signatures, checkpoint events appended (Python start-up included; its start-up alone is
   measured as the time to its first checkpoint on an empty stream: ``startup_s``);
2. **live**: appends ``--live-events`` more events one pipelined batch at a time with the notary running and
   following, then reports the time until they are signed after the last append (``sign_lag_ms``) and the append
   rate against the same appends without the notary (``append_events_per_s`` with/without);
3. **verify**: ``hermes verify``'s work in this process (read the stream with an ordered consumer, recompute every
   leaf, check every checkpoint and signature): events/s;
4. **storage**: bytes of the checkpoint events against the whole stream.

Run (not a test): ``uv run --frozen --group bench python bench/notary.py [--events 100000] [--every 1000]``.
Writes ``bench/results/notary.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import nats
from system import ROOT  # puts tests/ on sys.path

# isort: split
from procs import ServiceProcess  # noqa: E402
from threadlog import build_log  # noqa: E402

from hermes_proto import subjects  # noqa: E402
from hermes_proto.bus import EventStore, ensure_streams  # noqa: E402
from hermes_proto.integrity import CHECKPOINT_SUBJECT, CheckpointSigned  # noqa: E402
from hermes_proto.integrity_verify import LogVerifier  # noqa: E402
from hermes_proto.settings import BusSettings  # noqa: E402
from hermes_proto.stream_read import read_stream  # noqa: E402

from hermes_cli.natsserver import free_port, nats_server_args, wait_for_port  # noqa: E402


async def append(js, events: list, batch: int = 2000) -> float:  # noqa: ANN001
    store = EventStore(js, "bench")
    started = time.perf_counter()
    for i in range(0, len(events), batch):
        await store.append(events[i : i + batch])
    return time.perf_counter() - started


async def signed_size(js) -> int:  # noqa: ANN001
    try:
        raw = await js.get_last_msg(subjects.EVENTS_STREAM, CHECKPOINT_SUBJECT)
    except nats.js.errors.NotFoundError:
        return 0
    return msgspec.json.decode(raw.data, type=CheckpointSigned).tree_size


async def wait_signed(js, size: int, timeout_s: float = 600) -> float:  # noqa: ANN001
    started = time.perf_counter()
    while await signed_size(js) < size:
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"not signed up to {size} in {timeout_s}s")
        await asyncio.sleep(0.02)
    return time.perf_counter() - started


async def checkpoint_bytes(js) -> int:  # noqa: ANN001
    total = 0

    def add(message) -> None:  # noqa: ANN001
        nonlocal total
        if message.subject == CHECKPOINT_SUBJECT:
            total += len(message.data)

    await read_stream(js, subjects.EVENTS_STREAM, add)
    return total


async def measure(args: argparse.Namespace, tmp: Path, url: str) -> dict:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await ensure_streams(js, BusSettings(nats_url=url))
    env = {
        **os.environ,
        "NATS_URL": url,
        "HERMES_HOME": str(tmp / "home"),
        "METRICS_PORT": "0",
        "HERMES_CHECKPOINT_EVERY_EVENTS": str(args.every),
        "HERMES_CHECKPOINT_EVERY_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    notary = ServiceProcess("notary", "hermes_notary", env, tmp / "logs")

    # start-up alone: an empty stream, one event, its first checkpoint
    log = build_log(args.events + args.live_events, seed=3)
    events, live = log.events[: args.events], log.events[args.events :]
    started = time.perf_counter()
    notary.start()
    await append(js, events[:1])
    await wait_signed(js, 1, 120)
    startup_s = time.perf_counter() - started
    notary.stop()

    seconds_no_notary = await append(js, events[1:])
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    started = time.perf_counter()
    notary.start()
    await wait_signed(js, last)
    catch_up_s = time.perf_counter() - started

    half = len(live) // 2
    notary.stop()
    without = await append(js, live[:half], batch=200)
    notary.start()
    await wait_signed(js, (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq)
    with_notary = await append(js, live[half:], batch=200)
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    lag_s = await wait_signed(js, last)
    notary.stop()

    verifier = LogVerifier()
    started = time.perf_counter()
    count, last = await read_stream(
        js, subjects.EVENTS_STREAM, lambda m: verifier.add(m.sequence, m.subject, m.headers, m.data)
    )
    report = verifier.finish(last)
    verify_s = time.perf_counter() - started
    assert report.ok, report.findings[:3]
    info = await js.stream_info(subjects.EVENTS_STREAM)
    ckpt_bytes = await checkpoint_bytes(js)
    await nc.close()
    return {
        "events": args.events,
        "checkpoint_every": args.every,
        "startup_s": round(startup_s, 2),
        "append_events_per_s_initial": round((len(events) - 1) / seconds_no_notary),
        "catch_up_s": round(catch_up_s, 2),
        "catch_up_events_per_s": round(args.events / catch_up_s),
        "catch_up_events_per_s_net_of_startup": round(args.events / max(catch_up_s - startup_s, 1e-9)),
        "live_events": len(live),
        "append_events_per_s_without_notary": round(half / without),
        "append_events_per_s_with_notary": round((len(live) - half) / with_notary),
        "sign_lag_ms_after_last_append": round(lag_s * 1000),
        "verify_events_per_s": round(count / verify_s),
        "verify_s": round(verify_s, 2),
        "checkpoints": report.checkpoints,
        "stream_bytes": info.state.bytes,
        "checkpoint_bytes": ckpt_bytes,
        "checkpoint_share": round(ckpt_bytes / info.state.bytes, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--live-events", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=1000, help="HERMES_CHECKPOINT_EVERY_EVENTS")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-bench-notary-"))
    port = free_port()
    server = subprocess.Popen(
        nats_server_args(port, tmp / "jetstream"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port)
        row = asyncio.run(measure(args, tmp, f"nats://127.0.0.1:{port}"))
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    row = {"commit": commit.strip(), "python": sys.version.split()[0], **row}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "notary.json").write_text(json.dumps(row, indent=2) + "\n")
    print(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()

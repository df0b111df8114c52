"""Schedules under load and crashes (run on demand, not a test): ``hermes up`` against a zero-latency loopback model,
N schedules (default 100) firing every minute for M minutes (default 10), each an idea whose thread is one draft;
during the run every service and NATS is killed with SIGKILL once, at staggered times (some right at a due minute,
in the middle of a burst). Afterwards the log is read back (admin seed):

* lateness of each firing (``ScheduleFired.lateness_ms``: due time → the run's start decision), p50 / p99 / max;
* double firings: a (schedule, due key) with more than one ``ScheduleFired``, or a run thread opened twice;
* due times with neither a firing nor a missed record (lost), and missed records (the grace is 60 s, so an outage
  shorter than that fires late instead).

    uv run --frozen --group bench python bench/schedules.py [--schedules 100] [--minutes 10] [--no-kills]

Prints a table and writes ``bench/results/schedules.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
from nats.js.api import ConsumerConfig, DeliverPolicy
from system import FakeLLMProcess, start_stack  # noqa: E402 (bench/ is on sys.path when run as a script)

from hermes_proto import schedules as sc
from hermes_proto import subjects as subj
from hermes_proto.codec import decode_event
from hermes_proto.events import ThreadOpened

KILLED = ("hermes_orchestrator", "nats", "hermes_gateway", "hermes_router", "hermes_edge:talos", "hermes_learner",
          "hermes_notifier", "hermes_tools")  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def read_log(url: str, seed: Path) -> list:
    nc = await nats.connect(url, nkeys_seed=str(seed), inbox_prefix="_INBOX.admin")
    js = nc.jetstream()
    found = []
    for filt in ("hermes.evt.schedule.>", subj.event_type_filter(ThreadOpened)):
        sub = await js.subscribe(filt, ordered_consumer=True, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        info = await js.stream_info(subj.EVENTS_STREAM)
        last = info.state.last_seq
        while True:
            try:
                msg = await sub.next_msg(timeout=3)
            except TimeoutError:
                break
            found.append(decode_event(msg.data))
            if msg.metadata.sequence.stream >= last:
                break
        await sub.unsubscribe()
    await nc.close()
    return found


def kill_plan(minutes: int, start: float, kills: bool) -> list[tuple[float, str]]:
    """(monotonic time, program): one kill each, spread over the run; even ones 0.08 s after a due minute, inside its burst."""
    if not kills:
        return []
    plan = []
    for i, name in enumerate(KILLED):
        minute = 1 + (i * max(1, minutes - 2)) // len(KILLED)
        offset = 0.08 if i % 2 == 0 else 31.0
        plan.append((start + minute * 60 + offset, name))
    return sorted(plan)


def next_minute_epoch() -> float:
    now = time.time()
    return now - now % 60 + 60


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedules", type=int, default=100)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--no-kills", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hermes-schedules-"))
    llm = FakeLLMProcess(tmp / "llm.log").start()
    stack = start_stack(tmp, llm, edge_concurrency=8)
    kills_done: list[tuple[str, str]] = []
    try:
        with httpx.Client(base_url=stack.base_url, timeout=30) as client:
            stack.wait_healthy(client)
            for i in range(args.schedules):
                body = {
                    "name": f"bench-{i}",
                    "when": {"kind": "cron", "cron": "* * * * *"},
                    "action": {"kind": "idea", "text": f"bench schedule {i}: one line on the weather"},
                    "overlap": "allow",
                    "deliver": {"to": "log"},
                }
                assert client.post("/api/schedules", json=body).status_code == 202
            first_due = next_minute_epoch()
            end = first_due + args.minutes * 60 - 1
            plan = kill_plan(args.minutes, first_due - time.time() + time.monotonic(), not args.no_kills)
            print(f"{args.schedules} schedules; first due {datetime.fromtimestamp(first_due, UTC):%H:%M:%S}; "
                  f"kills: {[n for _, n in plan]}", flush=True)  # fmt: skip
            while time.time() < end:
                now = time.monotonic()
                while plan and plan[0][0] <= now:
                    _, name = plan.pop(0)
                    pid = stack.pids().get(name)
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        kills_done.append((datetime.now(UTC).strftime("%H:%M:%S.%f")[:-3], name))
                        print(f"  kill -9 {name} at {kills_done[-1][0]}", flush=True)
                await asyncio.sleep(0.05)
            for s in schedules_of(client):
                client.post(f"/api/schedules/{s}/pause")
            time.sleep(20)  # runs started by the last firings end; the log settles
        url = f"nats://127.0.0.1:{stack.env['HERMES_NATS_PORT']}"
        events = await read_log(url, stack.admin_seed)
    finally:
        stack.stop(check_bus=False)
        llm.stop()
    report(events, args, first_due, end, kills_done, tmp)


def schedules_of(client: httpx.Client) -> list[str]:
    return [s["schedule_id"] for s in client.get("/api/schedules", params={"limit": 1000}).json()["data"]["schedules"]]


def report(events: list, args, first_due: float, end: float, kills: list, tmp: Path) -> None:  # noqa: ANN001
    fired = [e for e in events if isinstance(e, sc.ScheduleFired)]
    missed = [e for e in events if isinstance(e, sc.ScheduleMissed)]
    per_key = collections.Counter((e.aggregate_id, e.due_key) for e in fired)
    doubles = {k: n for k, n in per_key.items() if n > 1}
    opened = collections.Counter(e.aggregate_id for e in events if isinstance(e, ThreadOpened))
    runs = {e.run_id for e in fired}
    opened_twice = [r for r in runs if opened.get(r, 0) > 1]
    dues = [datetime.fromtimestamp(first_due, UTC) + timedelta(minutes=m) for m in range(args.minutes)]
    ids = {e.aggregate_id for e in events if isinstance(e, sc.ScheduleCreated)}
    handled = {(e.aggregate_id, e.due_key) for e in fired} | {(e.aggregate_id, e.due_key) for e in missed}
    covered_by_missed = sum(e.count for e in missed)
    lost = [(s, sc.due_key(d)) for s in ids for d in dues if (s, sc.due_key(d)) not in handled]
    late = [e.lateness_ms for e in fired if e.reason in ("due", "catch_up")]
    result = {
        "schedules": len(ids),
        "minutes": args.minutes,
        "due_firings": len(ids) * len(dues),
        "fired": len(fired),
        "missed_records": len(missed),
        "missed_due_times": covered_by_missed,
        "lost": max(0, len(lost) - covered_by_missed),
        "double_firings": len(doubles),
        "runs_opened_twice": len(opened_twice),
        "runs_never_opened": sum(1 for r in runs if r not in opened),
        "lateness_ms": {
            "p50": round(percentile(late, 0.5), 1),
            "p99": round(percentile(late, 0.99), 1),
            "max": round(max(late), 1) if late else None,
            "mean": round(statistics.fmean(late), 1) if late else None,
        },
        "kills": kills,
        "home": str(tmp),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "schedules.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

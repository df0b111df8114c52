"""The generic read-model projection every stateful service shares.

The log follower hands each fetched batch to :meth:`Projection.handle_batch`, which decodes it once on the event loop,
folds it into the service's in-memory decision state (the optional ``fold`` callable: decisions read memory, never
the database) and queues it for the writer. One writer task applies everything queued so far, several fetched batches
at once when the database is slower than the log, with the service's synchronous ``apply_batch`` callable in a worker
thread: ONE transaction for the rows and the batch's last stream sequence as the position, so rows and position never
disagree and a kill -9 neither skips nor repeats an event (the fold is rebuilt at start from those rows and the log
after them). A failed write is retried with backoff; nothing is acknowledged or skipped meanwhile.

Two positions: :attr:`Projection.folded` (the decision state has applied it: :meth:`Projection.require_folded`) and
:attr:`Projection.position` (the rows are stored: :meth:`Projection.wait_for` / :meth:`Projection.require`, what
queries with ``min_sequence`` wait for). Undecodable events are skipped and dead-lettered. It imports no database
library.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge, Histogram

from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.bus import RawMessage, publish_dead_letter
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.keyring import ready as keyring_ready

log = structlog.get_logger("hermes.projection")


class Rejected(NamedTuple):
    """An event of a batch that could not be decoded; it is skipped and dead-lettered."""

    sequence: int
    subject: str
    data: bytes
    error: DecodeError


class ProjectionLagging(RuntimeError):
    """The read model did not reach the wanted sequence in time; a consumer handler raising it gets its
    message redelivered (with backoff) instead of deciding on stale rows."""


Decoded = list[tuple[int, Event]]
ApplyBatch = Callable[[list[RawMessage], Decoded], object]
"""Applies a non-empty batch (stream order; ``decoded``: its decodable events as ``(sequence, event)``) and saves
``batch[-1][0]`` as the position, atomically. Raising rolls the whole batch back. Its return value is ignored."""
Fold = Callable[[Decoded, int], None]
"""Folds decoded events into in-memory state; the int is the batch's last stream sequence. Runs on the event loop
and must not raise (a bug there is logged; the rows are still written)."""


def decode_batch(batch: list[RawMessage]) -> tuple[Decoded, list[Rejected]]:
    """Split a raw batch into decoded ``(sequence, event)`` pairs and :class:`Rejected` ones (an event sealed under a
    destroyed key is in neither: :mod:`hermes_proto.keyring`)."""
    decoded: Decoded = []
    rejected: list[Rejected] = []
    for raw in batch:
        seq, subject, data = raw[0], raw[1], raw[2]
        try:
            decoded.append((seq, decode_event(data, subject)))
        except DecodeError as exc:
            if exc.reason != "forgotten":  # a forgotten aggregate's events are skipped, not dead-lettered
                rejected.append(Rejected(seq, subject, data, exc))
    return decoded, rejected


@cache
def _metrics(service: str) -> tuple[Counter, Gauge, Gauge, Histogram]:
    # One set per service name and process: prometheus_client refuses to register a name twice.
    return (
        Counter(f"hermes_{service}_events_applied_total", "Events applied to the read models"),
        Gauge(f"hermes_{service}_projection_position", "Last HERMES_EVENTS sequence applied"),
        Gauge(f"hermes_{service}_projection_backlog", "Events folded but not yet written to the read models"),
        Histogram(
            f"hermes_{service}_projection_write_seconds",
            "One read-model write (a transaction)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        ),
    )


class _Waiters:
    """Futures waiting for a position: resolved in order as it advances (a heap, not a wake-all)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def wait(self, sequence: int, timeout_s: float) -> bool:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (sequence, next(self._order), future))
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return False
        return True

    def advance(self, position: int) -> None:
        heap = self._heap
        while heap and heap[0][0] <= position:
            future = heapq.heappop(heap)[2]
            if not future.done():
                future.set_result(None)


class Projection:
    """Owns the positions of one service's read models and decision state.

    ``position`` is the last applied stream sequence (start with the value the service loaded from its own database;
    the fold must hold the same). Metrics: ``hermes_<service>_events_applied_total``,
    ``hermes_<service>_projection_position``, ``_projection_backlog`` (events folded, not yet written) and
    ``_projection_write_seconds``; dead letters go to ``hermes.dlq.<service>-projection``. ``max_backlog`` (events)
    holds the follower back while the writer is that far behind.
    """

    def __init__(
        self,
        js: JetStreamContext,
        service: str,
        apply_batch: ApplyBatch,
        position: int,
        fold: Fold | None = None,
        max_backlog: int = 20_000,
    ) -> None:
        self.js = js
        self.service = service
        self.consumer = f"{service}-projection"
        self.position = position
        self.folded = position
        self._apply_batch = apply_batch
        self._fold = fold
        self._applied, self._position_gauge, self._backlog_gauge, self._write_seconds = _metrics(service)
        self._position_gauge.set(position)
        self._stored = _Waiters()
        self._folded = _Waiters()
        self._queue: list[tuple[list[RawMessage], Decoded, list[Rejected]]] = []
        self._backlog = 0
        self._max_backlog = max_backlog
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def handle_batch(self, batch: list[RawMessage]) -> None:
        """Decode ``batch`` ((sequence, subject, payload[, headers]) in stream order), fold it, and queue it for the
        writer; returns once it is folded (waits while the writer is ``max_backlog`` events behind)."""
        await keyring_ready(raw[2] for raw in batch)
        decoded, rejected = decode_batch(batch)
        last = batch[-1][0]
        if self._fold is not None:
            try:
                self._fold(decoded, last)
            except Exception as exc:  # a bug in the fold must not stop the rows (the log has the truth)
                log.exception("fold_failed", service=self.service, error=repr(exc))
        self.folded = last
        self._folded.advance(last)
        self._queue.append((batch, decoded, rejected))
        self._backlog += len(batch)
        self._backlog_gauge.set(self._backlog)
        self._work.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name=f"{self.service}-projection-writer")
        while self._backlog > self._max_backlog:
            self._room.clear()
            await self._room.wait()

    def apply_now(self, batch: list[RawMessage]) -> None:
        """Decode, fold and write ``batch`` in the calling thread, at once (benchmarks and tools; a running service
        uses :meth:`handle_batch`). Raises what the write raises."""
        decoded, _ = decode_batch(batch)
        if self._fold is not None:
            self._fold(decoded, batch[-1][0])
        self._apply_batch(batch, decoded)
        self.position = self.folded = batch[-1][0]

    async def _write_loop(self) -> None:
        delay = 0.2
        while True:
            await self._work.wait()
            self._work.clear()
            while self._queue:
                taken, self._queue = self._queue, []
                batch = [raw for b, _, _ in taken for raw in b]
                decoded = [pair for _, d, _ in taken for pair in d]
                rejected = [r for _, _, rs in taken for r in rs]
                started = asyncio.get_running_loop().time()
                try:
                    await asyncio.to_thread(self._apply_batch, batch, decoded)
                except Exception as exc:  # nothing was written: retry the same events, the fold already has them
                    log.exception("projection_write_failed", service=self.service, events=len(batch), error=repr(exc))
                    self._queue = taken + self._queue
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
                    continue
                delay = 0.2
                self._write_seconds.observe(asyncio.get_running_loop().time() - started)
                await self._written(batch, decoded, rejected)

    async def _written(self, batch: list[RawMessage], decoded: Decoded, rejected: list[Rejected]) -> None:
        for r in rejected:
            try:
                await publish_dead_letter(
                    self.js,
                    self.service,
                    self.consumer,
                    stream=subjects.EVENTS_STREAM,
                    subject=r.subject,
                    sequence=r.sequence,
                    deliveries=1,
                    headers={},
                    data=r.data,
                    reason=r.error.reason,
                    detail=r.error.detail,
                )
            except Exception as exc:  # the rows are stored; the dead letter is best effort from here
                log.error("dead_letter_failed", service=self.service, seq=r.sequence, error=repr(exc))
        self._applied.inc(len(batch) - len(rejected))
        self.position = batch[-1][0]
        self._position_gauge.set(self.position)
        self._backlog -= len(batch)
        self._backlog_gauge.set(self._backlog)
        if self._backlog <= self._max_backlog:
            self._room.set()
        try:
            await self.stored(batch, decoded)
        except Exception as exc:  # the rows are committed: a hook must not make the writer apply them again
            log.exception("projection_stored_hook_failed", service=self.service, error=repr(exc))
        self._stored.advance(self.position)

    async def stored(self, batch: list[RawMessage], decoded: Decoded) -> None:
        """Called after each write with what it stored (a service overrides it, e.g. to wake a dispatcher)."""

    async def stop(self) -> None:
        """Stop the writer (what is queued and unwritten is applied again from the log at the next start)."""
        if self._writer is not None:
            self._writer.cancel()
            try:
                await self._writer
            except (asyncio.CancelledError, Exception):
                pass

    async def wait_for(self, sequence: int, timeout_s: float = 10.0) -> bool:
        """True once the rows hold ``sequence`` (``position >= sequence``); False after ``timeout_s`` seconds."""
        if self.position >= sequence:
            return True
        return await self._stored.wait(sequence, timeout_s)

    async def require(self, sequence: int, timeout_s: float = 10.0) -> None:
        """Return once the rows hold ``sequence``; raises :class:`ProjectionLagging` after ``timeout_s`` seconds."""
        if not await self.wait_for(sequence, timeout_s):
            raise ProjectionLagging(f"{self.service} read model behind sequence {sequence}")

    async def require_folded(self, sequence: int, timeout_s: float = 10.0) -> None:
        """Return once the in-memory state holds ``sequence`` (``folded >= sequence``); raises
        :class:`ProjectionLagging` after ``timeout_s`` seconds."""
        if self.folded >= sequence:
            return
        if not await self._folded.wait(sequence, timeout_s):
            raise ProjectionLagging(f"{self.service} state behind sequence {sequence}")

    async def last_sequence(self) -> int:
        """``HERMES_EVENTS``' last sequence now (one JetStream API request)."""
        return (await self.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq

    async def catch_up(self, at_least: int = 0, timeout_s: float = 10.0) -> None:
        """Return once the rows hold the whole log as it is now (``HERMES_EVENTS``' last sequence, or ``at_least``
        if higher): a decision then sees every event already appended. Raises :class:`ProjectionLagging` after
        ``timeout_s`` seconds."""
        await self.require(max(at_least, await self.last_sequence()), timeout_s)

    async def catch_up_folded(self, at_least: int = 0, timeout_s: float = 10.0) -> None:
        """As :meth:`catch_up`, for the in-memory state."""
        await self.require_folded(max(at_least, await self.last_sequence()), timeout_s)

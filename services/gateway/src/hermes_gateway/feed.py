"""The gateway's one subscription to the threads' events, fanned out to the live views watching each thread.

One JetStream ordered push consumer on ``hermes.evt.thread.>`` (ephemeral, in memory, heartbeats and flow control;
nats-py recreates it from the last delivered sequence after a gap or lost heartbeats), started at the gateway's
start from the log's end, delivers every thread event once to this process. Each is dispatched by thread id (the
subject's fourth token) to the views registered for that thread (:meth:`EventFeed.watch`) and kept a while per
thread, so a view opened right after a submission gets the thread's first events from memory. A live view costs
no JetStream consumer and no API request, however many watch.

A view that starts before what memory holds (``Last-Event-ID`` after a gateway restart, an old thread from its
start) reads the missing range from the stream first, by direct gets of the thread's subjects (``next_by_subj``),
then takes the kept and live events; the view drops any sequence it already gave (:class:`~hermes_gateway.live.ThreadFeed`).

What memory holds, per thread: every event delivered since :data:`KEEP_AFTER_DONE_S` after its terminal event
(``thread_completed``/``thread_failed``) or :data:`IDLE_S` without any, at most :data:`MAX_EVENTS_PER_THREAD`
events per thread, :data:`MAX_THREADS` threads and :data:`MAX_KEPT_BYTES` in all (the least recently fed go
first). ``complete_after`` says from where a thread's kept events are complete; a thread the gateway has just
created (:meth:`EventFeed.expect`) is complete from its beginning.

:attr:`EventFeed.position` (the last sequence delivered) is the read-your-writes position of what this gateway has
shown: every thread event an SSE client or chat turn of this gateway can have seen is at or below it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from hermes_proto import subjects as subj
from hermes_proto.bus import resume_after

from hermes_gateway.observability import FEED_CATCH_UP_READS, FEED_KEPT_THREADS, LIVE_VIEWS

log = structlog.get_logger("hermes.gateway")

THREAD_EVENTS = "hermes.evt.thread.>"
TERMINAL_EVENTS = ("thread_completed", "thread_failed")
KEEP_AFTER_DONE_S = 60.0
IDLE_S = 600.0
MAX_EVENTS_PER_THREAD = 512
MAX_THREADS = 2000
MAX_KEPT_BYTES = 4 << 20
HEARTBEAT_S = 2.0
"""The ordered consumer's idle heartbeat: two missed ones (4 s, e.g. after nats-server restarted) recreate it."""


@dataclass(frozen=True, slots=True)
class LogEvent:
    """One event of ``HERMES_EVENTS`` as stored: its stream sequence, subject and JSON bytes."""

    seq: int
    subject: str
    data: bytes


Watcher = Callable[[LogEvent], None]
"""Called (synchronously, in the event loop) with each live event of the watched thread, in stream order."""


@dataclass
class _Kept:
    complete_after: int
    """Every event of the thread with a greater sequence is in ``events``."""
    events: list[LogEvent] = field(default_factory=list)
    size: int = 0
    last_s: float = 0.0
    done: bool = False


class EventFeed:
    """The one thread-event subscription of a gateway process. :meth:`start` it once, :meth:`watch` per view."""

    def __init__(self) -> None:
        self.position = 0
        """The last ``HERMES_EVENTS`` sequence delivered (at start: the log's end then)."""
        self._js: JetStreamContext | None = None
        self._sub = None
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._kept_bytes = 0
        self._complete_after = 0
        """A thread with nothing kept has no event above this (the start position, or the newest evicted)."""
        self._views: dict[str, list[Watcher]] = {}
        self._swept_s = float("-inf")

    async def start(self, js: JetStreamContext) -> None:
        """Subscribe from the log's end (one ``stream_info``, one consumer). Raises the bus's errors."""
        self._js = js
        self.position = self._complete_after = (await js.stream_info(subj.EVENTS_STREAM)).state.last_seq
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.position + 1)
        self._sub = await js.subscribe(
            THREAD_EVENTS,
            stream=subj.EVENTS_STREAM,
            cb=self._on_msg,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_S,
            config=config,
        )
        resume_after(self._sub, self.position)
        log.info("event_feed_started", position=self.position)

    async def stop(self) -> None:
        """Unsubscribe (errors of a lost connection are ignored)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may already be gone; the server drops the consumer
                log.debug("event_feed_unsubscribe_failed", error=repr(exc))

    # ---- delivery ------------------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        self.deliver(LogEvent(msg.metadata.sequence.stream, msg.subject, msg.data))

    def deliver(self, event: LogEvent) -> None:
        """Keep ``event`` and hand it to its thread's views; one at or below :attr:`position` (a consumer
        recreated from an earlier sequence) is dropped."""
        if event.seq <= self.position:
            return
        self.position = event.seq
        parts = event.subject.split(".", 4)
        if len(parts) != 5:  # not hermes.evt.thread.<id>.<type>: no thread's view shows it
            return
        thread_id = parts[3]
        self._keep(thread_id, event, parts[4] in TERMINAL_EVENTS)
        for watcher in self._views.get(thread_id, ()):
            watcher(event)

    def _keep(self, thread_id: str, event: LogEvent, terminal: bool) -> None:
        now_s = time.monotonic()
        kept = self._kept.get(thread_id)
        if kept is None:
            kept = self._kept[thread_id] = _Kept(self._complete_after)
        else:
            self._kept.move_to_end(thread_id)  # most recently fed last
        kept.events.append(event)
        kept.size += len(event.data)
        self._kept_bytes += len(event.data)
        kept.last_s, kept.done = now_s, kept.done or terminal
        if len(kept.events) > MAX_EVENTS_PER_THREAD:
            dropped = kept.events.pop(0)
            kept.size -= len(dropped.data)
            self._kept_bytes -= len(dropped.data)
            kept.complete_after = dropped.seq
        self._evict(now_s)

    def _evict(self, now_s: float) -> None:
        while len(self._kept) > MAX_THREADS or self._kept_bytes > MAX_KEPT_BYTES:
            self._forget(next(iter(self._kept)))
        if now_s - self._swept_s < 1.0:  # the expiry sweep walks every thread: at most once a second
            return
        self._swept_s = now_s
        for thread_id in [
            t for t, kept in self._kept.items() if now_s - kept.last_s > (KEEP_AFTER_DONE_S if kept.done else IDLE_S)
        ]:
            self._forget(thread_id)
        FEED_KEPT_THREADS.set(len(self._kept))

    def _forget(self, thread_id: str) -> None:
        kept = self._kept.pop(thread_id)
        self._kept_bytes -= kept.size
        if kept.events:  # what it held is no longer in memory: threads seen from now on are complete above it
            self._complete_after = max(self._complete_after, kept.events[-1].seq)

    # ---- views ---------------------------------------------------------------------------------------

    def expect(self, thread_id: str) -> None:
        """``thread_id`` was just created here (no event of it can exist yet): its kept events are complete from
        its beginning, so a view of it from the start needs no read of the stream."""
        if thread_id not in self._kept:
            self._kept[thread_id] = _Kept(0, last_s=time.monotonic())
            self._evict(time.monotonic())

    def watch(self, thread_id: str, watcher: Watcher, start_after: int) -> tuple[list[LogEvent], int]:
        """Register ``watcher`` for ``thread_id``'s live events; returns the kept events after ``start_after`` (in
        stream order) and ``complete_after``: events of the thread in ``(start_after, complete_after]`` are not in
        memory (read them with :meth:`read`). Always :meth:`unwatch`."""
        self._views.setdefault(thread_id, []).append(watcher)
        LIVE_VIEWS.inc()
        kept = self._kept.get(thread_id)
        if kept is None:
            return [], self._complete_after
        return [e for e in kept.events if e.seq > start_after], kept.complete_after

    def unwatch(self, thread_id: str, watcher: Watcher) -> None:
        """Stop handing ``thread_id``'s events to ``watcher`` (idempotent)."""
        views = self._views.get(thread_id)
        if views is None or watcher not in views:
            return
        views.remove(watcher)
        LIVE_VIEWS.dec()
        if not views:
            del self._views[thread_id]

    async def read(self, thread_id: str, after: int, upto: int) -> list[LogEvent]:
        """The thread's events with a sequence in ``(after, upto]``, from the stream (one direct get per event,
        plus one past the last). Raises the bus's errors."""
        assert self._js is not None, "start() first"
        found: list[LogEvent] = []
        seq = after + 1
        while seq <= upto:
            FEED_CATCH_UP_READS.inc()
            try:
                raw = await self._js.get_msg(
                    subj.EVENTS_STREAM, seq=seq, subject=subj.thread_events(thread_id), next=True
                )
            except NotFoundError:
                break
            if raw.seq is None or raw.seq > upto:
                break
            found.append(LogEvent(raw.seq, raw.subject or "", raw.data or b""))
            seq = raw.seq + 1
        return found

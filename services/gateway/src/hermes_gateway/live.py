"""The live view of one thread, as the SSE stream, the OpenAI-compatible API and perception events follow it: the
thread's log events (from the gateway's one :class:`~hermes_gateway.feed.EventFeed`) merged with its token deltas
(from the :class:`~hermes_gateway.tokens.TokenBuffer`'s one subscription). Opening a view subscribes to nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hermes_proto import subjects as subj
from hermes_proto.codec import UNDECODABLE, DecodeError, decode_event, encode, unseal
from hermes_proto.execution import TokenDelta
from hermes_proto.keyring import ready as keyring_ready
from hermes_proto.rpc import BUS_ERRORS, BusUnavailable

from hermes_gateway.adapters import Bus
from hermes_gateway.feed import TERMINAL_EVENTS, LogEvent

log = structlog.get_logger("hermes.gateway")


@dataclass(frozen=True)
class FeedItem:
    """One Server-Sent Event: ``event`` is the event type (or ``token``), ``data`` its JSON text, ``id``
    the ``HERMES_EVENTS`` sequence for log events (None for tokens), ``terminal`` for the thread's last."""

    event: str
    data: str
    id: str | None = None
    terminal: bool = False


@dataclass(frozen=True, slots=True)
class _Token:
    subject: str
    data: bytes


_STOP = object()


class ThreadFeed:
    """The live view of one thread: every event of ``hermes.evt.thread.<id>.>`` after ``start_after`` merged with
    the token deltas of ``hermes.tokens.<id>.*`` (the thread's kept ones first). ``start_after=None``: from now
    (the feed's position; no kept deltas), for a caller about to publish the command whose outcome it waits for.
    Call :meth:`open` before the response starts (reading older events from the stream can fail and is still
    answerable), iterate :meth:`items`, always :meth:`close`."""

    def __init__(self, bus: Bus, thread_id: str, start_after: int | None = 0) -> None:
        self._bus = bus
        self.thread_id = thread_id
        self.start_after = start_after
        self._queue: asyncio.Queue[LogEvent | _Token | object] = asyncio.Queue()
        self._first: list[LogEvent | _Token] = []
        """Given before the queue: the kept deltas, then the events read from the stream."""
        self._last_seq = 0
        self._open = False

    async def open(self) -> None:
        """Register on the token and event feeds (no I/O), then read from the stream the thread's events after
        ``start_after`` that the feed no longer (or never) held. Raises :class:`BusUnavailable` while the gateway
        is not connected to NATS (nothing would arrive) or when that read fails."""
        if not self._bus.nc.is_connected:
            raise BusUnavailable("NATS", ConnectionError("the gateway is not connected"))
        events, tokens = self._bus.events, self._bus.tokens
        live = self.start_after is None
        start_after = self.start_after = events.position if live else self.start_after
        self._last_seq = start_after
        self._open = True
        if tokens is not None:
            self._first = [_Token(s, d) for s, d in tokens.watch(self.thread_id, self._on_token, replay=not live)]
        kept, complete_after = events.watch(self.thread_id, self._queue.put_nowait, start_after)
        for event in kept:
            self._queue.put_nowait(event)
        if start_after < complete_after:
            try:
                self._first += await events.read(self.thread_id, start_after, complete_after)
            except BUS_ERRORS as exc:
                await self.close()
                raise BusUnavailable("JetStream", exc) from exc

    def _on_token(self, subject: str, data: bytes) -> None:
        self._queue.put_nowait(_Token(subject, data))

    def stop(self) -> None:
        """End :meth:`items` after what is already queued (e.g. the server is shutting down)."""
        self._queue.put_nowait(_STOP)

    def _to_item(self, msg: LogEvent | _Token) -> FeedItem | None:
        if isinstance(msg, _Token):
            try:
                delta = msgspec.json.decode(msg.data, type=TokenDelta)
            except UNDECODABLE as exc:
                log.warning("bad_token_delta", subject=msg.subject, error=str(exc))
                return None
            return FeedItem("token", encode(delta).decode())
        if msg.seq <= self._last_seq:  # read from the stream and then kept or live: given once
            return None
        self._last_seq = msg.seq
        try:
            data = unseal(msg.data)
            event = decode_event(data)
        except DecodeError as exc:
            log.warning("undecodable_event_skipped", subject=msg.subject, reason=exc.reason)
            return None
        event_type = event.type_name()
        # Decoding skips unknown fields without checking their UTF-8: keep them, replacing invalid bytes.
        return FeedItem(
            event_type, data.decode(errors="replace"), id=str(msg.seq), terminal=event_type in TERMINAL_EVENTS
        )

    async def items(self) -> AsyncIterator[FeedItem]:
        """Feed items in arrival order (log events in stream order, each once), ending after the terminal event
        or at :meth:`stop`."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def batches(self) -> AsyncIterator[list[FeedItem]]:
        """:meth:`items` grouped as they become ready: each batch (never empty) holds every item queued when the
        previous one was taken, so a burst (a model streaming its tokens) is written to the client at once."""
        pending: list[LogEvent | _Token | object] = list(self._first)
        self._first = []
        while True:
            if not pending:
                pending.append(await self._queue.get())
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            batch: list[FeedItem] = []
            await keyring_ready(m.data for m in pending if isinstance(m, LogEvent))
            for msg in pending:
                item = None if msg is _STOP else self._to_item(msg)  # type: ignore[arg-type]
                if item is not None:
                    batch.append(item)
                if msg is _STOP or (item is not None and item.terminal):
                    if batch:
                        yield batch
                    return
            pending = []
            if batch:
                yield batch

    async def close(self) -> None:
        """Leave both feeds (idempotent)."""
        if not self._open:
            return
        self._open = False
        self._bus.events.unwatch(self.thread_id, self._queue.put_nowait)
        if self._bus.tokens is not None:
            self._bus.tokens.unwatch(self.thread_id, self._on_token)


async def terminal_sequence(js: JetStreamContext, thread_id: str) -> int | None:
    """The ``HERMES_EVENTS`` sequence of the thread's first ``thread_completed``/``thread_failed`` event,
    or None while it is still running. Raises :class:`BusUnavailable`."""
    found: list[int] = []
    for event_type in TERMINAL_EVENTS:
        try:
            msg = await js.get_last_msg(subj.EVENTS_STREAM, subj.thread_event(thread_id, event_type))
        except NotFoundError:
            continue
        except BUS_ERRORS as exc:
            raise BusUnavailable("JetStream", exc) from exc
        if msg.seq is not None:
            found.append(msg.seq)
    return min(found) if found else None

"""The generic read-model projection every stateful service shares.

A service owns its storage and hands in one synchronous ``apply_batch`` callable that, in ONE
transaction, applies a batch of the log and stores the batch's last stream sequence as its position
(so the rows and the position never disagree). This module runs that callable off the event loop,
dead-letters the events it could not decode, keeps the metrics, and lets handlers wait until a given
stream sequence is applied (read-your-writes). It imports no database library.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.bus import RawMessage, publish_dead_letter
from hermes_proto.codec import DecodeError, decode_event

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


ApplyBatch = Callable[[list[RawMessage]], list[Rejected]]
"""Applies a non-empty batch (stream order) and saves ``batch[-1][0]`` as the position, atomically;
returns the events it skipped as undecodable. Raising rolls the whole batch back."""


def decode_batch(batch: list[RawMessage]) -> tuple[list[tuple[int, Event]], list[Rejected]]:
    """Split a raw batch into decoded ``(sequence, event)`` pairs and :class:`Rejected` ones."""
    decoded: list[tuple[int, Event]] = []
    rejected: list[Rejected] = []
    for raw in batch:
        seq, subject, data = raw[0], raw[1], raw[2]
        try:
            decoded.append((seq, decode_event(data)))
        except DecodeError as exc:
            rejected.append(Rejected(seq, subject, data, exc))
    return decoded, rejected


@cache
def _metrics(service: str) -> tuple[Counter, Gauge]:
    # One pair per service name and process: prometheus_client refuses to register a name twice.
    return (Counter(f"hermes_{service}_events_applied_total", "Events applied to the read models"),
            Gauge(f"hermes_{service}_projection_position", "Last HERMES_EVENTS sequence applied"))


class Projection:
    """Owns the position of one service's read models.

    ``position`` is the last applied stream sequence (start with the value the service loaded from its
    own database). Metrics: ``hermes_<service>_events_applied_total`` and
    ``hermes_<service>_projection_position``; dead letters go to ``hermes.dlq.<service>-projection``.
    """

    def __init__(self, js: JetStreamContext, service: str, apply_batch: ApplyBatch, position: int) -> None:
        self.js = js
        self.service = service
        self.consumer = f"{service}-projection"
        self.position = position
        self._apply_batch = apply_batch
        self._applied, self._position_gauge = _metrics(service)
        self._position_gauge.set(position)
        self._advanced = asyncio.Condition()

    async def handle_batch(self, batch: list[RawMessage]) -> None:
        """Apply ``batch`` ((sequence, subject, payload) in stream order) atomically; undecodable events are
        skipped and dead-lettered with their reason. Raises what ``apply_batch`` raises (nothing applied)."""
        rejected = await asyncio.to_thread(self._apply_batch, batch)
        for r in rejected:
            await publish_dead_letter(self.js, self.service, self.consumer, stream=subjects.EVENTS_STREAM,
                                      subject=r.subject, sequence=r.sequence, deliveries=1, headers={},
                                      data=r.data, reason=r.error.reason, detail=r.error.detail)
        self._applied.inc(len(batch) - len(rejected))
        async with self._advanced:
            self.position = batch[-1][0]
            self._position_gauge.set(self.position)
            self._advanced.notify_all()

    async def wait_for(self, sequence: int, timeout_s: float = 10.0) -> bool:
        """True once ``position >= sequence``; False if that takes longer than ``timeout_s`` seconds."""
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.position >= sequence), timeout_s)
            except TimeoutError:
                return False
        return True

    async def require(self, sequence: int, timeout_s: float = 10.0) -> None:
        """Return once ``position >= sequence``; raises :class:`ProjectionLagging` after ``timeout_s`` seconds."""
        if not await self.wait_for(sequence, timeout_s):
            raise ProjectionLagging(f"{self.service} read model behind sequence {sequence}")

    async def catch_up(self, at_least: int = 0, timeout_s: float = 10.0) -> None:
        """Return once the read model has applied the whole log as it is now (``HERMES_EVENTS``' last
        sequence, or ``at_least`` if higher): a decision then sees every event already appended, including
        its own earlier output. Raises :class:`ProjectionLagging` after ``timeout_s`` seconds."""
        last = (await self.js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
        await self.require(max(at_least, last), timeout_s)

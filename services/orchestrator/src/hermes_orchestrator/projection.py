"""The read-model projection: applies batches of the log in one transaction each, and lets
callers wait until a given stream sequence is applied (read-your-writes)."""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.bus import publish_dead_letter
from hermes_proto.codec import DecodeError, decode_event

from hermes_orchestrator import readmodel

log = structlog.get_logger("hermes.orchestrator.projection")

EVENTS_APPLIED = Counter("hermes_orchestrator_events_applied_total", "Events applied to the read models")
POSITION = Gauge("hermes_orchestrator_projection_position", "Last HERMES_EVENTS sequence applied")

CONSUMER = "orchestrator-projection"


class Projection:
    """Owns the position of the read models. ``position`` is the last applied stream sequence."""

    def __init__(self, engine: Engine, js: JetStreamContext) -> None:
        self.engine = engine
        self.js = js
        with Session(engine) as session:
            self.position = readmodel.load_position(session)
        POSITION.set(self.position)
        self._advanced = asyncio.Condition()

    def _apply_batch(self, batch: list[tuple[int, str, bytes]]) -> list[tuple[int, str, bytes, DecodeError]]:
        rejected = []
        with Session(self.engine) as session:
            for seq, subject, data in batch:
                try:
                    event = decode_event(data)
                except DecodeError as exc:
                    rejected.append((seq, subject, data, exc))
                    continue
                readmodel.apply(event, session)
                session.flush()
            readmodel.save_position(session, batch[-1][0])
            session.commit()
        return rejected

    async def handle_batch(self, batch: list[tuple[int, str, bytes]]) -> None:
        """Apply ``batch`` ((sequence, subject, payload) in stream order) atomically; undecodable events are
        skipped and dead-lettered with their reason."""
        rejected = await asyncio.to_thread(self._apply_batch, batch)
        for seq, subject, data, exc in rejected:
            await publish_dead_letter(self.js, "orchestrator", CONSUMER, stream=subjects.EVENTS_STREAM,
                                      subject=subject, sequence=seq, deliveries=1, headers={}, data=data,
                                      reason=exc.reason, detail=exc.detail)
        EVENTS_APPLIED.inc(len(batch) - len(rejected))
        async with self._advanced:
            self.position = batch[-1][0]
            POSITION.set(self.position)
            self._advanced.notify_all()

    async def wait_for(self, sequence: int, timeout_s: float = 10.0) -> bool:
        """True once ``position >= sequence``; False if that takes longer than ``timeout_s`` seconds."""
        async with self._advanced:
            try:
                await asyncio.wait_for(self._advanced.wait_for(lambda: self.position >= sequence), timeout_s)
            except TimeoutError:
                return False
        return True

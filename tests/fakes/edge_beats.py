"""Live edges on the bus, for tests that play the edge's part themselves (they pull ``hermes.exec.<backend>`` and
append the outcome): the router dispatches only to a backend some live edge serves, so such a test also has to
send what a real edge sends to say it is there.

:class:`EdgeBeats` publishes a :class:`~hermes_proto.execution.Heartbeat` per backend on core NATS every
``interval_s`` seconds and answers the router's probes (``hermes.probe.<backend>``) with one, ``healthy`` as set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hermes_proto import subjects
from hermes_proto.codec import encode
from hermes_proto.execution import Heartbeat
from hermes_proto.ids import utcnow


class EdgeBeats:
    """``async with EdgeBeats(nc, ["talos"]) as beats: ...``; set ``beats.healthy`` to change what is reported."""

    def __init__(
        self,
        nc,
        backends: Sequence[str] = ("talos",),
        models: Sequence[str] = ("smollm2",),
        healthy: bool = True,
        interval_s: float = 0.3,
    ) -> None:
        self.nc = nc
        self.backends = list(backends)
        self.models = list(models)
        self.healthy = healthy
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._subs: list = []

    def beat(self, backend: str) -> bytes:
        return encode(
            Heartbeat(
                backend=backend,
                models=self.models,
                in_flight=0,
                healthy=self.healthy,
                sent_at=utcnow(),
                edge_id="test-edge",
            )
        )

    async def _run(self) -> None:
        while True:
            for backend in self.backends:
                await self.nc.publish(subjects.heartbeat_subject(backend), self.beat(backend))
            await asyncio.sleep(self.interval_s)

    async def _answer(self, msg) -> None:
        if msg.reply:
            await msg.respond(self.beat(msg.subject.rsplit(".", 1)[-1]))

    async def __aenter__(self) -> EdgeBeats:
        for backend in self.backends:
            self._subs.append(
                await self.nc.subscribe(subjects.probe_subject(backend), queue=f"edge-{backend}", cb=self._answer)
            )
        await self.nc.flush()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection may be closing with the test
                pass

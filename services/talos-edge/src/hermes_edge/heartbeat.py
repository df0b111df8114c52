"""The edge's liveness signal: a probe of the model server, published as a heartbeat on core NATS every few
seconds and given as the reply to the router's probe requests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from hermes_proto.codec import encode
from hermes_proto.execution import Heartbeat
from hermes_proto.ids import utcnow
from hermes_proto.subjects import heartbeat_subject, probe_subject

from hermes_edge.domain import ProbeResult
from hermes_edge.metrics import BACKEND_HEALTHY, PROBE_REQUESTS

log = structlog.get_logger("hermes.edge")


class Probe(Protocol):
    async def probe(self, timeout_s: float = 3.0) -> ProbeResult: ...


class HeartbeatPublisher:
    """Builds :class:`Heartbeat`s from probes of the model server (``probe_timeout_s`` seconds at most):
    publishes one on ``hermes.heartbeat.<backend>`` every ``interval_s`` seconds (:meth:`run`) and answers
    each request on ``hermes.probe.<backend>`` with a fresh one (:meth:`subscribe_probes`). ``models`` are
    the configured models; when none are configured, those the server lists are reported. An unreachable
    model server only makes ``healthy`` false; nothing here raises out of :meth:`run` or a probe reply."""

    def __init__(
        self,
        *,
        nc: NATS,
        backend: str,
        models: list[str],
        probe: Probe,
        in_flight: Callable[[], int],
        interval_s: float = 5.0,
        probe_timeout_s: float = 3.0,
        edge_id: str = "",
    ) -> None:
        self._nc = nc
        self.backend = backend
        self._models = models
        self._probe = probe
        self._in_flight = in_flight
        self._interval_s = interval_s
        self._probe_timeout_s = probe_timeout_s
        self._edge_id = edge_id
        self.healthy: bool | None = None
        self._listed: list[str] = []

    async def current(self) -> Heartbeat:
        """Probe once and return the heartbeat saying what was found; records the health (log on change,
        ``hermes_edge_backend_healthy``). Never raises: a probe that raises counts as unhealthy.

        While a call is in flight on a backend already known healthy, the probe is skipped and the backend
        stays healthy: a server that runs one generation at a time (llama.cpp's, Ollama with one slot) holds
        the probe behind it, and a timed-out probe would mark a busy backend down. A call that fails says
        so by itself, and the next idle probe looks again."""
        if self.healthy and self._in_flight() > 0:
            result = ProbeResult(healthy=True, models=self._listed, detail="busy: probe skipped")
        else:
            try:
                result = await self._probe.probe(self._probe_timeout_s)
            except Exception as exc:  # the adapters' probes do not raise; a future one might
                result = ProbeResult(healthy=False, models=[], detail=f"probe raised {exc!r}")
        self._record(result)
        return Heartbeat(
            backend=self.backend,
            models=list(self._models or result.models),
            in_flight=self._in_flight(),
            healthy=result.healthy,
            sent_at=utcnow(),
            edge_id=self._edge_id,
        )

    def _record(self, result: ProbeResult) -> None:
        if result.healthy != self.healthy:
            if result.healthy:
                log.info("backend_healthy", backend=self.backend, listed_models=result.models[:20])
            else:
                log.warning("backend_unhealthy", backend=self.backend, detail=result.detail)
        self.healthy = result.healthy
        self._listed = result.models
        BACKEND_HEALTHY.labels(self.backend).set(1 if result.healthy else 0)

    async def beat(self) -> Heartbeat:
        """Probe once and publish one heartbeat; returns it. Raises only if publishing fails."""
        heartbeat = await self.current()
        await self._nc.publish(heartbeat_subject(self.backend), encode(heartbeat))
        return heartbeat

    async def run(self, stop: asyncio.Event) -> None:
        """Beat until ``stop`` is set (first beat at once)."""
        while not stop.is_set():
            try:
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat_failed", backend=self.backend, error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass

    async def subscribe_probes(self, queue: str) -> Subscription:
        """Answer core NATS requests on ``hermes.probe.<backend>`` in queue group ``queue`` (one edge of
        the group answers each request) with a fresh heartbeat (JSON). A reply takes up to the probe
        timeout. Raises only if subscribing fails."""
        return await self._nc.subscribe(probe_subject(self.backend), queue=queue, cb=self.answer_probe)

    async def answer_probe(self, msg: Msg) -> None:
        """Reply to one probe request; never raises (a failed reply is logged, the router times out).
        A message without a reply subject asks nothing and is ignored."""
        if not msg.reply:
            return
        try:
            heartbeat = await self.current()
            PROBE_REQUESTS.labels(self.backend, str(heartbeat.healthy).lower()).inc()
            await msg.respond(encode(heartbeat))
        except Exception as exc:
            log.warning("probe_reply_failed", backend=self.backend, error=repr(exc))

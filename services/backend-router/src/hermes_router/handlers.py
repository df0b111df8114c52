"""Router handlers: pick a backend for each queued job and hand it to that backend's work queue."""

from __future__ import annotations

import asyncio
import time

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from hermes_proto import subjects
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.codec import DecodeError, decode_heartbeat, encode
from hermes_proto.events import BackendSelected, ExecutionFailed, JobQueued
from hermes_proto.execution import ExecutionRequested, Heartbeat
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.telemetry import bind_ids

from hermes_router import domain
from hermes_router.config import BackendConfig, RouterSettings

log = structlog.get_logger("hermes.router")

SELECTIONS = Counter("hermes_router_selections_total", "Backends chosen", ["backend", "criteria"])
NO_BACKEND = Counter("hermes_router_no_backend_total", "Jobs failed because no backend became eligible in time")
WAITING = Gauge("hermes_router_jobs_waiting_for_backend", "Jobs waiting for an eligible backend")
HEALTHY = Gauge("hermes_router_backend_healthy", "1 healthy, 0 unhealthy, -1 unknown", ["backend"])

BAD_HEARTBEATS = Counter("hermes_router_bad_heartbeats_total", "Heartbeats that did not decode", ["reason"])
RECHECK_S = 2.0  # while waiting: re-select at least this often (heartbeats also wake the wait)


class Router:
    def __init__(self, js: JetStreamContext, settings: RouterSettings, registry: dict[str, BackendConfig]) -> None:
        self.js = js
        self.settings = settings
        self.registry = registry
        self.store = EventStore(js, "router")
        self._heartbeats: dict[str, tuple[float, Heartbeat]] = {}
        self._beat = asyncio.Event()
        for name in registry:
            HEALTHY.labels(name).set(-1)

    def health(self) -> dict[str, domain.Health]:
        """Health per backend from heartbeats: stale (older than the configured seconds) counts as unhealthy."""
        now = time.monotonic()
        result = {}
        for name, (seen, beat) in self._heartbeats.items():
            fresh = now - seen <= self.settings.hermes_heartbeat_stale_seconds
            state = "healthy" if fresh and beat.healthy else "unhealthy"
            result[name] = domain.Health(state=state, in_flight=beat.in_flight)
            HEALTHY.labels(name).set(1 if state == "healthy" else 0)
        return result

    async def on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data)
        except DecodeError as exc:
            BAD_HEARTBEATS.labels(exc.reason).inc()
            log.warning("bad_heartbeat", subject=msg.subject, reason=exc.reason, detail=exc.detail[:200])
            return
        self._heartbeats[beat.backend] = (time.monotonic(), beat)
        self._beat.set()

    async def _select_waiting(self, delivery: Delivery[JobQueued], criteria: str) -> domain.Selection:
        """Select a backend; while none is eligible (e.g. the model server is still starting or is down),
        wait for one, keeping the message in progress, until ``hermes_no_backend_wait_seconds`` after the
        job was queued. Jobs behind this one wait too: none of them could be routed either."""
        job = delivery.message
        deadline = job.occurred_at.timestamp() + self.settings.hermes_no_backend_wait_seconds
        selection = domain.select(self.registry, self.health(), criteria, self.settings.hermes_primary_backend)
        if selection.chosen is not None or time.time() >= deadline:
            return selection
        log.info("waiting_for_backend", wait_s=round(deadline - time.time(), 1), reason=selection.reason)
        WAITING.inc()
        try:
            while selection.chosen is None and time.time() < deadline:
                await delivery.in_progress()
                self._beat.clear()
                try:
                    await asyncio.wait_for(self._beat.wait(), timeout=min(RECHECK_S, deadline - time.time()))
                except TimeoutError:
                    pass
                selection = domain.select(self.registry, self.health(), criteria,
                                          self.settings.hermes_primary_backend)
        finally:
            WAITING.dec()
        return selection

    async def on_job(self, delivery: Delivery[JobQueued]) -> None:
        job = delivery.message
        if not isinstance(job, JobQueued):
            return
        bind_ids(thread_id=job.aggregate_id, job_id=job.job_id, correlation_id=job.correlation_id)
        criteria = self.settings.hermes_default_selection_criteria
        selection = await self._select_waiting(delivery, criteria)
        now = utcnow()
        common = dict(aggregate_id=job.aggregate_id, occurred_at=now, correlation_id=job.correlation_id,
                      causation_id=job.event_id)
        if selection.chosen is None:
            NO_BACKEND.inc()
            await self.store.append([ExecutionFailed(
                event_id=derived_id(job.event_id, "no_backend"), **common, job_id=job.job_id, backend="none",
                model="none", error_code="no_backend", message=selection.reason, retryable=False)])
            log.warning("no_backend", candidates=[c.backend for c in selection.candidates])
            return
        chosen = selection.chosen
        await self.store.append([BackendSelected(
            event_id=derived_id(job.event_id, "backend_selected"), **common, job_id=job.job_id,
            backend=chosen.backend, model=chosen.model, reason=selection.reason, criteria=criteria,
            candidates=selection.candidates)])
        backend = self.registry[chosen.backend]
        request = ExecutionRequested(
            request_id=derived_id(job.event_id, "execution_requested"), thread_id=job.aggregate_id,
            job_id=job.job_id, backend=chosen.backend, model=chosen.model, messages=job.messages,
            max_tokens=job.max_tokens, temperature=job.temperature, timeout_s=backend.timeout,
            correlation_id=job.correlation_id, requested_at=now)
        await self.store.request_execution(subjects.exec_subject(chosen.backend), encode(request),
                                           request.request_id)
        SELECTIONS.labels(chosen.backend, criteria).inc()
        log.info("backend_selected", backend=chosen.backend, model=chosen.model, reason=selection.reason)

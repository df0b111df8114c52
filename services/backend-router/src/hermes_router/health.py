"""Backend health: heartbeats, probes and call failures as signals; consecutive failures past
``HERMES_UNHEALTHY_THRESHOLD`` append :class:`BackendMarkedUnhealthy`, the next good signal appends
:class:`BackendRecovered`. The marks are events, so the read model (and a replay) knows them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from hermes_proto import subjects
from hermes_proto.backends import BackendConfig
from hermes_proto.bus import EventStore
from hermes_proto.codec import DecodeError, decode_heartbeat
from hermes_proto.events import BackendMarkedUnhealthy, BackendRecovered
from hermes_proto.execution import Heartbeat
from hermes_proto.ids import new_id, utcnow

from hermes_router.metrics import BAD_HEARTBEATS, BACKEND_HEALTH, PROBES

log = structlog.get_logger("hermes.router")

# Call failures that say the backend itself is unwell (not the request): they count as failed signals.
UNWELL_CODES = {"connection_error", "timeout", "http_5xx"}


class HealthMonitor:
    """Tracks every registered backend. ``marked`` (backend → unhealthy) starts from the read model and is
    changed only by the events this monitor appends; ``live`` is the last signal (healthy/unhealthy)."""

    def __init__(self, nc: NATS, store: EventStore, registry: dict[str, BackendConfig], threshold: int,
                 probe_timeout_s: float, marked: dict[str, bool], on_change: Callable[[], None]) -> None:
        self.nc = nc
        self.store = store
        self.registry = registry
        self.threshold = threshold
        self.probe_timeout_s = probe_timeout_s
        self.marked = dict(marked)
        self.live: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.heartbeats: dict[str, tuple[float, Heartbeat]] = {}
        self._on_change = on_change
        self._lock = asyncio.Lock()
        for name in registry:
            self._gauge(name)

    def state(self, backend: str) -> str:
        """unhealthy while marked; degraded after failed signals not yet past the threshold (still eligible);
        healthy after a good signal; unknown before any signal."""
        if self.marked.get(backend):
            return "unhealthy"
        if self.failures.get(backend, 0) > 0:
            return "degraded"
        return self.live.get(backend, "unknown")

    def served_models(self, backend: str) -> tuple[str, ...]:
        seen = self.heartbeats.get(backend)
        return tuple(seen[1].models) if seen else ()

    def _gauge(self, backend: str) -> None:
        state = self.state(backend)
        BACKEND_HEALTH.labels(backend).set({"healthy": 1, "degraded": 1, "unhealthy": 0}.get(state, -1))

    async def signal(self, backend: str, ok: bool, detail: str) -> None:
        """Record one health signal; append a mark or recovery when the state flips."""
        if backend not in self.registry:
            return
        async with self._lock:
            before = self.state(backend)
            self.live[backend] = "healthy" if ok else "unhealthy"
            if ok:
                self.failures[backend] = 0
                if self.marked.get(backend):
                    await self._append(BackendRecovered(**self._envelope(backend), detail=detail[:300]))
                    self.marked[backend] = False
                    log.info("backend_recovered", backend=backend, detail=detail[:200])
            else:
                count = self.failures.get(backend, 0) + 1
                self.failures[backend] = count
                if count >= self.threshold and not self.marked.get(backend):
                    await self._append(BackendMarkedUnhealthy(**self._envelope(backend),
                                                              consecutive_failures=count, reason=detail[:300]))
                    self.marked[backend] = True
                    log.warning("backend_marked_unhealthy", backend=backend, failures=count, reason=detail[:200])
            self._gauge(backend)
            if self.state(backend) != before:
                self._on_change()

    @staticmethod
    def _envelope(backend: str) -> dict:
        return dict(event_id=new_id(), aggregate_id=backend, occurred_at=utcnow(), correlation_id=new_id())

    announce: bool = True
    """Whether this router appends the marks and recoveries (one replica of a partitioned router does)."""

    async def _append(self, event) -> None:  # noqa: ANN001
        if self.announce:
            await self.store.append([event])

    async def on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = decode_heartbeat(msg.data)
        except DecodeError as exc:
            BAD_HEARTBEATS.labels(exc.reason).inc()
            log.warning("bad_heartbeat", subject=msg.subject, reason=exc.reason, detail=exc.detail[:200])
            return
        self.heartbeats[beat.backend] = (time.monotonic(), beat)
        await self.signal(beat.backend, beat.healthy, "heartbeat: " + ("healthy" if beat.healthy else "unhealthy"))

    async def probe(self, backend: str) -> bool:
        """Ask the backend's edges for a fresh probe (core NATS request); no reply in time is a failure."""
        try:
            reply = await self.nc.request(subjects.probe_subject(backend), b"{}", timeout=self.probe_timeout_s)
            beat = decode_heartbeat(reply.data)
        except DecodeError as exc:
            BAD_HEARTBEATS.labels(exc.reason).inc()
            ok, detail = False, f"probe: bad reply ({exc.reason})"
        except Exception as exc:  # timeout, no responders, connection loss
            ok, detail = False, f"probe: {type(exc).__name__}"
        else:
            self.heartbeats[backend] = (time.monotonic(), beat)
            ok, detail = beat.healthy, "probe: " + ("healthy" if beat.healthy else "model server unreachable")
        PROBES.labels(backend, "ok" if ok else "failed").inc()
        await self.signal(backend, ok, detail)
        return ok

    async def run_probes(self, stop: asyncio.Event) -> None:
        """Probe every backend at its ``HEALTH_CHECK_INTERVAL`` until ``stop``; never raises."""
        due = {name: 0.0 for name in self.registry}
        while not stop.is_set():
            now = time.monotonic()
            for name, at in due.items():
                if now >= at:
                    due[name] = now + self.registry[name].health_check_interval
                    try:
                        await self.probe(name)
                    except Exception as exc:
                        log.warning("probe_failed", backend=name, error=repr(exc))
            wait = max(0.05, min(due.values()) - time.monotonic())
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

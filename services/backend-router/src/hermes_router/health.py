"""Backend health: heartbeats, probes and call failures as signals; consecutive failures past
``HERMES_UNHEALTHY_THRESHOLD`` append :class:`BackendMarkedUnhealthy`, the next good signal appends
:class:`BackendRecovered`. The marks are events, so the read model (and a replay) knows them.

Apart from the marks, a backend is ``no_edge`` while no edge process serves it: no heartbeat or probe reply from
one of its edges within ``HERMES_EDGE_STALE_SECONDS`` (a probe nobody answers says so at once). Work sent there
would wait in its execution queue with nothing to run it, so the selection skips it (``domain.rejection``)."""

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

from hermes_router.domain import NO_EDGE
from hermes_router.metrics import BACKEND_EDGE_LIVE, BACKEND_HEALTH, BAD_HEARTBEATS, PROBES

log = structlog.get_logger("hermes.router")

# Call failures that say the backend itself is unwell (not the request): they count as failed signals.
UNWELL_CODES = {"connection_error", "timeout", "http_5xx"}
SWEEP_S = 1.0
"""Seconds between two looks at the edges' liveness (a silent edge is noticed at most this late)."""


class HealthMonitor:
    """Tracks every registered backend. ``marked`` (backend → unhealthy) starts from the read model and is
    changed only by the events this monitor appends; ``live`` is the last signal (healthy/unhealthy);
    ``edge_seen`` when (``clock`` seconds) an edge of the backend last sent a heartbeat or probe reply.
    ``edge_stale_s``: how long an edge may stay silent and still count as serving its backend (keep it above the
    edges' ``HERMES_EDGE_HEARTBEAT_S``). ``on_change`` is called whenever a backend's :meth:`state` changes."""

    def __init__(
        self,
        nc: NATS,
        store: EventStore,
        registry: dict[str, BackendConfig],
        threshold: int,
        probe_timeout_s: float,
        marked: dict[str, bool],
        on_change: Callable[[], None],
        edge_stale_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.nc = nc
        self.store = store
        self.registry = registry
        self.threshold = threshold
        self.probe_timeout_s = probe_timeout_s
        self.marked = dict(marked)
        self.live: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.heartbeats: dict[str, tuple[float, Heartbeat]] = {}
        self.edge_stale_s = edge_stale_s
        self.edge_seen: dict[str, float] = {}
        self._asked: set[str] = set()
        self._clock = clock
        self._started = clock()
        self._on_change = on_change
        self._lock = asyncio.Lock()
        self._reported: dict[str, str] = {}
        for name in registry:
            self._report(name)

    def edge_live(self, backend: str) -> bool | None:
        """Whether an edge serves ``backend`` now: True when one spoke within ``edge_stale_s``; False when none
        did although one was asked (a probe) or the window since this monitor started has passed; None before
        either (just started, nothing heard yet)."""
        seen = self.edge_seen.get(backend)
        now = self._clock()
        if seen is not None and now - seen <= self.edge_stale_s:
            return True
        if seen is not None or backend in self._asked or now - self._started > self.edge_stale_s:
            return False
        return None

    def state(self, backend: str) -> str:
        """no_edge while no live edge serves it (:meth:`edge_live` False); else unhealthy while marked;
        degraded after failed signals not yet past the threshold (still eligible); healthy after a good signal;
        unknown before any signal."""
        if self.edge_live(backend) is False:
            return NO_EDGE
        if self.marked.get(backend):
            return "unhealthy"
        if self.failures.get(backend, 0) > 0:
            return "degraded"
        return self.live.get(backend, "unknown")

    def served_models(self, backend: str) -> tuple[str, ...]:
        seen = self.heartbeats.get(backend)
        return tuple(seen[1].models) if seen else ()

    def _report(self, backend: str) -> bool:
        """Update the gauges of ``backend`` and log an edge found or lost; returns whether its state changed
        since the last report."""
        state = self.state(backend)
        before = self._reported.get(backend)
        self._reported[backend] = state
        BACKEND_HEALTH.labels(backend).set({"healthy": 1, "degraded": 1, "unhealthy": 0, NO_EDGE: 0}.get(state, -1))
        BACKEND_EDGE_LIVE.labels(backend).set(1 if self.edge_live(backend) else 0)
        if before is not None and (state == NO_EDGE) != (before == NO_EDGE):
            if state == NO_EDGE:
                log.warning("backend_edge_lost", backend=backend, stale_after_s=self.edge_stale_s)
            else:
                log.info("backend_edge_found", backend=backend, state=state)
        return before is not None and state != before

    def sweep(self) -> None:
        """Notice edges that went silent (their backends become ``no_edge``); calls ``on_change`` if any did."""
        changed = [name for name in self.registry if self._report(name)]
        if changed:
            self._on_change()

    async def signal(self, backend: str, ok: bool, detail: str, *, edge: bool | None = None) -> None:
        """Record one health signal; append a mark or recovery when the state flips. ``edge``: True when an edge
        of the backend sent it (heartbeat, probe reply), False when a probe found no edge to answer, None for a
        call's outcome."""
        if backend not in self.registry:
            return
        async with self._lock:
            if edge:
                self.edge_seen[backend] = self._clock()
            elif edge is False:
                self._asked.add(backend)
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
                    await self._append(
                        BackendMarkedUnhealthy(
                            **self._envelope(backend), consecutive_failures=count, reason=detail[:300]
                        )
                    )
                    self.marked[backend] = True
                    log.warning("backend_marked_unhealthy", backend=backend, failures=count, reason=detail[:200])
            if self._report(backend):
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
        await self.signal(
            beat.backend, beat.healthy, "heartbeat: " + ("healthy" if beat.healthy else "unhealthy"), edge=True
        )

    async def probe(self, backend: str) -> bool:
        """Ask the backend's edges for a fresh probe (core NATS request); no reply in time is a failure, and
        says that no edge serves the backend."""
        try:
            reply = await self.nc.request(subjects.probe_subject(backend), b"{}", timeout=self.probe_timeout_s)
            beat = decode_heartbeat(reply.data)
        except DecodeError as exc:
            BAD_HEARTBEATS.labels(exc.reason).inc()
            ok, edge, detail = False, True, f"probe: bad reply ({exc.reason})"
        except Exception as exc:  # timeout, no responders, connection loss
            ok, edge, detail = False, False, f"probe: {type(exc).__name__}"
        else:
            self.heartbeats[backend] = (time.monotonic(), beat)
            ok, edge = beat.healthy, True
            detail = "probe: " + ("healthy" if beat.healthy else "model server unreachable")
        PROBES.labels(backend, "ok" if ok else "failed").inc()
        await self.signal(backend, ok, detail, edge=edge)
        return ok

    async def _probe_safely(self, backend: str) -> None:
        try:
            await self.probe(backend)
        except Exception as exc:
            log.warning("probe_failed", backend=backend, error=repr(exc))

    async def run_probes(self, stop: asyncio.Event) -> None:
        """Probe every backend at its ``HEALTH_CHECK_INTERVAL`` (the backends due at once concurrently, so a slow
        one delays no other) and :meth:`sweep` every ``SWEEP_S`` seconds, until ``stop``; never raises."""
        due = {name: 0.0 for name in self.registry}
        while not stop.is_set():
            now = time.monotonic()
            ready = [name for name, at in due.items() if now >= at]
            for name in ready:
                due[name] = now + self.registry[name].health_check_interval
            if ready:
                await asyncio.gather(*(self._probe_safely(name) for name in ready))
            self.sweep()
            wait = max(0.05, min([SWEEP_S, *(at - time.monotonic() for at in due.values())]))
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass

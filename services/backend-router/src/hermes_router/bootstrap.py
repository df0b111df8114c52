"""Composition of the backend-router process: the read-model projection (the log is the job queue), health
(heartbeats and probes), the dispatcher and the request/reply surface."""

from __future__ import annotations

import asyncio

import structlog
from nats.js import JetStreamContext
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from hermes_proto import keyring, sqlstore, subjects
from hermes_proto import projection as proj
from hermes_proto.bus import EventStore, LogFollower, close, connect, ensure_streams
from hermes_proto.events import ExecutionCompleted, ExecutionFailed
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.partitions import Partition
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_router import readmodel
from hermes_router.config import RouterSettings, load_registry
from hermes_router.handlers import WAKE_EVENTS, Router
from hermes_router.health import UNWELL_CODES, HealthMonitor
from hermes_router.metrics import (
    BACKEND_COST,
    BACKEND_FAILURES,
    BACKEND_LATENCY,
    BACKEND_REQUESTS,
    BACKEND_TOKENS,
)
from hermes_router.queries import QueryResponder
from hermes_router.view import RouterView

log = structlog.get_logger("hermes.router")
SERVICE = "router"


class RouterProjection(proj.Projection):
    """Applies each batch of the log to the router's read models in one transaction, position included, then
    wakes the dispatcher. Events newer than the start position also feed the live per-backend metrics and
    health signals (a replay at start is not counted twice)."""

    def __init__(self, engine: Engine, js: JetStreamContext) -> None:
        self.engine = engine
        self.rows = readmodel.row_store(engine)
        with self.rows:
            position = readmodel.load_position(self.rows)
        self.view = RouterView.load(engine)
        self.start_position = position
        self.listeners: list = []
        super().__init__(js, SERVICE, self._apply, position)

    def _apply(self, batch: list[proj.RawMessage], decoded: proj.Decoded) -> None:
        traces = {raw[0]: raw[3] for raw in batch if len(raw) > 3 and raw[3]}
        readmodel.apply_events(self.rows, decoded, batch[-1][0], traces)
        if any(isinstance(e, PersonalDataForgotten) for _, e in decoded):  # no copy left in the log's frames
            sqlstore.checkpoint(self.engine)

    async def stored(self, batch: list[proj.RawMessage], decoded: proj.Decoded) -> None:
        jobs = self.view.apply(self.rows.changes)
        live = [e for seq, e in decoded if seq > self.start_position]
        for listener in self.listeners:
            try:
                await listener(live, jobs)
            except Exception as exc:  # the batch is committed: raising would make the follower re-apply it
                log.exception("listener_failed", error=repr(exc))


def observe(events: list) -> None:
    for e in events:
        match e:
            case ExecutionCompleted():
                BACKEND_REQUESTS.labels(e.backend, "completed").inc()
                BACKEND_LATENCY.labels(e.backend).observe(e.latency_ms / 1000)
                BACKEND_TOKENS.labels(e.backend, "prompt").inc(e.prompt_tokens)
                BACKEND_TOKENS.labels(e.backend, "completion").inc(e.completion_tokens)
            case ExecutionFailed():
                BACKEND_REQUESTS.labels(e.backend, e.error_code).inc()
                BACKEND_FAILURES.labels(e.backend, e.error_code).inc()
                BACKEND_LATENCY.labels(e.backend).observe(e.latency_ms / 1000)
            case _ if e.type_name() == "cost_recorded":
                BACKEND_COST.labels(e.backend, e.project).inc(e.cost_cents)


def load_marks(engine: Engine) -> dict[str, bool]:
    with Session(engine) as s:
        return {r.backend: r.health == "unhealthy" for r in s.exec(select(readmodel.BackendStateRow))}


async def run(settings: RouterSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM). Raises ``pydantic.ValidationError`` on bad configuration."""
    configure_logging("backend-router", settings.log_level, settings.log_file)
    configure_tracing("backend-router")
    registry = load_registry(settings)
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()
    nc = await connect(settings, "backend-router")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)
    engine = readmodel.make_engine(settings.db_url())
    projection = await asyncio.to_thread(RouterProjection, engine, js)
    store = EventStore(js, SERVICE)
    router: Router | None = None

    def wake() -> None:
        if router is not None:
            router.wake.set()

    health = HealthMonitor(
        nc,
        store,
        registry,
        settings.hermes_unhealthy_threshold,
        settings.hermes_probe_timeout_seconds,
        load_marks(engine),
        wake,
        edge_stale_s=settings.hermes_edge_stale_seconds,
    )
    partition = Partition.of(settings)
    health.announce = partition.index == 0
    router = Router(nc, settings, registry, engine, projection, health, projection.view, partition)

    async def on_live(events: list, jobs: dict) -> None:
        observe(events)
        for e in events:
            if isinstance(e, ExecutionFailed) and e.error_code in UNWELL_CODES:
                await health.signal(e.backend, False, f"call failed: {e.error_code}")
            elif isinstance(e, ExecutionCompleted):
                await health.signal(e.backend, True, "call completed")
        await router.stop_cancelled(events, jobs)
        if any(isinstance(e, WAKE_EVENTS) for e in events):
            router.wake.set()

    projection.listeners.append(on_live)
    follower = LogFollower(
        js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, projection.handle_batch, start_after=projection.position
    )
    tasks = [asyncio.create_task(follower.run(), name="projection")]
    last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await projection.wait_for(last, timeout_s=3600)
    log.info("read_models_caught_up", position=projection.position)
    await nc.subscribe(subjects.HEARTBEATS_ALL, cb=health.on_heartbeat)
    await QueryResponder(nc, router).subscribe()
    tasks += [
        asyncio.create_task(router.run(stop), name="dispatcher"),
        asyncio.create_task(health.run_probes(stop), name="probes"),
    ]
    log.info(
        "router_started",
        backends={n: b.type for n, b in registry.items()},
        criteria=settings.hermes_default_selection_criteria,
        balancing=router.policy.balancing,
    )
    await stop.wait()
    follower.stop()
    await asyncio.wait(tasks, timeout=5)
    await close(nc)
    engine.dispose()

"""Composition of the backend-router process."""

from __future__ import annotations

import asyncio

import structlog

from hermes_proto import subjects
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, close, connect, ensure_streams
from hermes_proto.codec import decode_event
from hermes_proto.events import JobQueued
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_router.config import RouterSettings, load_registry
from hermes_router.handlers import Router

log = structlog.get_logger("hermes.router")


async def run(settings: RouterSettings, stop: asyncio.Event | None = None) -> None:
    configure_logging("backend-router", settings.log_level, settings.log_file)
    configure_tracing("backend-router")
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()
    nc = await connect(settings, "backend-router")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    registry = load_registry(settings)
    router = Router(js, settings, registry)
    await nc.subscribe(subjects.HEARTBEATS_ALL, cb=router.on_heartbeat)
    jobs = ConsumerRunner(nc, js, ConsumerSpec(
        stream=subjects.EVENTS_STREAM, durable="router-jobs",
        filter_subjects=[subjects.event_type_filter(JobQueued)], decode=decode_event,
        handler=router.on_job), "backend-router")
    task = asyncio.create_task(jobs.run())
    log.info("router_started", backends={n: b.type for n, b in registry.items()})
    await stop.wait()
    jobs.stop()
    await asyncio.wait([task], timeout=5)
    await close(nc)

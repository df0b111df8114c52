"""Composition of the edge: NATS, streams, one HTTP client session, the adapter, N consumers, the heartbeat and the
replies to the router's probe requests."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

import aiohttp
import structlog
from nats.aio.client import Client as NATS
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext

from hermes_proto import keyring
from hermes_proto import subjects as subj
from hermes_proto.backends import BackendConfig
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, connect, ensure_streams
from hermes_proto.codec import decode_execution_request
from hermes_proto.ids import new_id

from hermes_edge.adapters import HttpChatAdapter, build_adapter, new_session
from hermes_edge.config import EdgeSettings, loggable_url
from hermes_edge.handlers import ExecutionHandler
from hermes_edge.heartbeat import HeartbeatPublisher

SERVICE = "talos-edge"
log = structlog.get_logger("hermes.edge")


def durable_name(backend: str) -> str:
    """``edge-<backend>``: every edge process of one backend shares this durable (work is split) and this
    queue group of probe replies (one edge answers each probe)."""
    return f"edge-{backend}"


class EdgeConsumer(ConsumerRunner):
    """A :class:`ConsumerRunner` that remembers its pull subscription so shutdown can drop it: nats-py's
    ``drain()`` waits forever on a pull subscription's queue (fetch never marks items done)."""

    subscription: JetStreamContext.PullSubscription | None = None

    async def subscribe(self) -> JetStreamContext.PullSubscription:
        self.subscription = await super().subscribe()
        return self.subscription

    async def unsubscribe(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await self.subscription.unsubscribe()
            self.subscription = None


@dataclass
class Edge:
    """A composed edge. ``runners`` are ``HERMES_EDGE_CONCURRENCY`` consumers of the same durable, each
    fetching one message at a time, so at most that many model calls run at once in this process."""

    settings: EdgeSettings
    backend: BackendConfig
    nc: NATS
    js: JetStreamContext
    session: aiohttp.ClientSession
    adapter: HttpChatAdapter
    handler: ExecutionHandler
    runners: list[EdgeConsumer]
    heartbeat: HeartbeatPublisher
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    probes: Subscription | None = None


async def ensure_streams_retrying(js: JetStreamContext, settings: EdgeSettings, attempts: int = 20) -> None:
    """:func:`ensure_streams`, retried (0.5 s apart) while another service creates the same streams."""
    for attempt in range(1, attempts + 1):
        try:
            await ensure_streams(js, settings)
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("ensure_streams_failed", attempt=attempt, error=repr(exc))
            await asyncio.sleep(0.5)


async def build_edge(settings: EdgeSettings, backend: BackendConfig) -> Edge:
    """Connect to NATS (retrying, see :func:`hermes_proto.bus.connect`), declare the streams and compose
    the edge. Raises the connection error when NATS stays unreachable."""
    name = settings.hermes_edge_backend
    nc = await connect(settings, f"{SERVICE}-{name}")
    js = nc.jetstream()
    await ensure_streams_retrying(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)
    session = new_session(max_connections=max(10, 2 * settings.hermes_edge_concurrency))
    adapter = build_adapter(backend, session)
    handler = ExecutionHandler(
        backend=name,
        model=adapter,
        store=EventStore(js, SERVICE),
        nc=nc,
        default_model=backend.models[0] if backend.models else None,
        timeout_cap_s=backend.timeout,
    )
    spec = ConsumerSpec(
        stream=subj.EXEC_STREAM,
        durable=durable_name(name),
        filter_subjects=[subj.exec_subject(name)],
        decode=decode_execution_request,
        handler=handler,
        ack_wait_s=settings.hermes_edge_ack_wait_s,
        batch=1,  # a fetched message waits for nobody: its ack wait starts at delivery
        on_give_up=handler.give_up,
    )
    runners = [EdgeConsumer(nc, js, spec, SERVICE) for _ in range(settings.hermes_edge_concurrency)]
    heartbeat = HeartbeatPublisher(
        nc=nc,
        backend=name,
        models=backend.models,
        probe=adapter,
        in_flight=lambda: handler.in_flight,
        interval_s=settings.hermes_edge_heartbeat_s,
        probe_timeout_s=settings.hermes_edge_probe_timeout_s,
        edge_id=new_id()[:12],
    )
    return Edge(settings, backend, nc, js, session, adapter, handler, runners, heartbeat)


async def run_edge(edge: Edge, stop: asyncio.Event) -> None:
    """Serve (consume requests, beat, answer probe requests) until ``stop`` is set, then shut down: stop
    answering probes, stop fetching, let running calls finish for up to
    ``HERMES_EDGE_SHUTDOWN_GRACE_S`` seconds (a call cut short is nak-ed and redelivered), drain NATS,
    close the HTTP session."""
    log.info(
        "edge_started",
        backend=edge.settings.hermes_edge_backend,
        type=edge.backend.type,
        url=loggable_url(edge.adapter.base_url),
        models=edge.backend.models,
        concurrency=len(edge.runners),
        durable=edge.runners[0].spec.durable,
    )
    edge.probes = await edge.heartbeat.subscribe_probes(durable_name(edge.settings.hermes_edge_backend))
    # Every edge of the backend (no queue group) hears each cancellation; the one running the job stops it.
    await edge.nc.subscribe(subj.cancel_subject(edge.settings.hermes_edge_backend), cb=edge.handler.on_cancel)
    runner_tasks = [asyncio.create_task(r.run(), name=f"consumer-{i}") for i, r in enumerate(edge.runners)]
    heartbeat_task = asyncio.create_task(edge.heartbeat.run(edge.stopping), name="heartbeat")
    await stop.wait()
    log.info("edge_stopping", in_flight=edge.handler.in_flight)
    edge.stopping.set()
    heartbeat_task.cancel()  # a probe in progress has nothing worth waiting for
    if edge.probes is not None:
        with contextlib.suppress(Exception):
            await edge.probes.unsubscribe()  # another edge of the group answers from now on
    for runner in edge.runners:
        runner.stop()
    # Idle runners finish their current fetch (<= 2 s); busy ones get the grace period for their call.
    _, pending = await asyncio.wait(runner_tasks, timeout=edge.settings.hermes_edge_shutdown_grace_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(heartbeat_task, *pending, return_exceptions=True)
    for runner in edge.runners:
        await runner.unsubscribe()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(edge.nc.drain(), timeout=5)
    await edge.session.close()
    log.info("edge_stopped")

"""Composition: the FastAPI app with its bus connection, routes, error envelopes and observability."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from hermes_proto import keyring
from hermes_proto.admission import QueueCap
from hermes_proto.bus import EventStore, connect, ensure_streams

from hermes_gateway.accepted import AcceptedThreads
from hermes_gateway.adapters import BackendsClient, Bus, CommandPublisher, LearnerClient, ReadModel, SessionsClient
from hermes_gateway.admission import QueueReservations
from hermes_gateway.auth import install_auth, install_cors
from hermes_gateway.config import GatewaySettings
from hermes_gateway.envelope import document_error_envelope, install_error_handlers
from hermes_gateway.feed import EventFeed
from hermes_gateway.headers import SecurityHeaders
from hermes_gateway.observability import RequestObservability
from hermes_gateway.routes import (
    agents,
    auth,
    backends,
    config,
    deadletters,
    events,
    export,
    external,
    forget,
    ideas,
    learn,
    me_export,
    metrics,
    openai,
    perception,
    project_memory,
    results,
    schedules,
    sessions,
    skills,
    system,
    telegram,
    threads,
    tools,
    ui,
    workflows,
)
from hermes_gateway.routes.ui import STATIC_DIR
from hermes_gateway.tokens import TokenBuffer

log = structlog.get_logger("hermes.gateway")


def create_app(settings: GatewaySettings) -> FastAPI:
    """The gateway app. Its lifespan connects to NATS (unlimited reconnects; the first connection retried
    for up to a minute), declares the Hermes streams, starts the live feeds (one subscription to token deltas,
    one ordered consumer of the threads' events), and closes the connection on shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings, "hermes-gateway")
        js = nc.jetstream()
        await ensure_streams(js, settings)
        await keyring.start(js, settings.hermes_seal_personal_data)
        tokens = TokenBuffer()
        await tokens.start(nc)
        events = EventFeed()
        await events.start(js)
        bus = Bus(nc=nc, js=js, store=EventStore(js, "gateway"), events=events, tokens=tokens)
        app.state.bus = bus
        app.state.read_model = ReadModel(bus, settings.hermes_query_timeout_seconds)
        app.state.accepted = AcceptedThreads(settings.hermes_accepted_max_threads, settings.hermes_accepted_ttl_seconds)
        app.state.commands = CommandPublisher(bus, app.state.accepted)
        cap = QueueCap(settings.hermes_max_queued_jobs, settings.hermes_queue_full_retry_after_seconds)
        app.state.admission = QueueReservations(bus, cap)
        app.state.backends = BackendsClient(bus, settings.hermes_query_timeout_seconds)
        app.state.learner = LearnerClient(bus, settings.hermes_query_timeout_seconds)
        app.state.sessions = SessionsClient(bus, settings.hermes_query_timeout_seconds)
        app.state.perception = await perception.subscribe(app)
        log.info(
            "gateway_ready",
            nats_url=settings.nats_url,
            url=f"http://{settings.hermes_web_host}:{settings.hermes_web_port}/",
        )
        try:
            yield
        finally:
            await events.stop()
            await nc.close()
            log.info("gateway_stopped")

    # FastAPI's own telemetry makes the HTTP SERVER span (continuing a caller's traceparent) on the tracer
    # provider hermes_proto.telemetry installed; it must not add exporters of its own from the environment.
    app = FastAPI(title="Hermes gateway", version="0.1.0", lifespan=lifespan, telemetry={"auto_configure": False})
    app.state.settings = settings
    install_error_handlers(app)
    install_auth(app, settings)  # added first: runs inside RequestObservability, so refusals are logged
    app.add_middleware(RequestObservability)
    install_cors(app, settings)  # outside auth, so preflights skip it and refusals carry CORS headers
    app.add_middleware(SecurityHeaders)  # outermost: every response carries them, preflights and refusals too
    for module in (
        ideas,
        external,
        workflows,
        threads,
        events,
        backends,
        learn,
        system,
        deadletters,
        telegram,
        metrics,
        ui,
        results,
        auth,
        openai,
        sessions,
        export,
        perception,
        config,
        agents,
        tools,
        schedules,
        project_memory,
        skills,
        me_export,
        forget,
    ):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    document_error_envelope(app)
    return app

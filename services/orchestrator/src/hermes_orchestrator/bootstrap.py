"""Composition of the orchestrator process: connections, read models, consumers, queries."""

from __future__ import annotations

import asyncio

import structlog

from hermes_proto import subjects
from hermes_proto.bus import (ConsumerRunner, ConsumerSpec, LogFollower, aggregate_lane, close, command_lane, connect,
                              ensure_streams)
from hermes_proto.codec import decode_command, decode_event
from hermes_proto.events import DraftPresented, ExecutionAbandoned, ExecutionCompleted, QuestionsProposed
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_orchestrator import domain
from hermes_orchestrator.config import OrchestratorSettings
from hermes_orchestrator.handlers import Orchestrator, QueryResponder
from hermes_orchestrator.projection import Projection
from hermes_orchestrator.readmodel import make_engine
from hermes_orchestrator.soul import SoulFile

log = structlog.get_logger("hermes.orchestrator")

REACTION_EVENTS = (ExecutionCompleted, ExecutionAbandoned, DraftPresented, QuestionsProposed)


async def run(settings: OrchestratorSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    configure_logging("orchestrator", settings.log_level, settings.log_file)
    configure_tracing("orchestrator")
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()

    nc = await connect(settings, "orchestrator")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    engine = make_engine(settings.db_url())
    projection = Projection(engine, js)
    limits = domain.Limits(max_questions=settings.hermes_max_questions,
                           answer_timeout_s=settings.hermes_answer_timeout_seconds,
                           max_tokens=settings.hermes_draft_max_tokens,
                           temperature=settings.hermes_draft_temperature,
                           job_timeout_s=settings.hermes_job_timeout_seconds or None,
                           workflow_max_steps=settings.hermes_workflow_max_steps,
                           workflow_timeout_s=settings.hermes_workflow_timeout_minutes * 60 or None,
                           preference_threshold=(settings.hermes_confidence_threshold
                                                 if settings.hermes_learning_enabled else None),
                           memory_token_budget=settings.hermes_memory_token_budget,
                           memory_max_items=settings.hermes_memory_max_items)
    soul = SoulFile(settings.soul_path())
    soul.ensure()
    orchestrator = Orchestrator(nc, js, engine, projection, limits, soul)

    follower = LogFollower(js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, projection.handle_batch,
                           start_after=projection.position)
    reactor = ConsumerRunner(nc, js, ConsumerSpec(
        stream=subjects.EVENTS_STREAM, durable="orchestrator-reactor",
        filter_subjects=[subjects.event_type_filter(t) for t in REACTION_EVENTS],
        decode=decode_event, handler=orchestrator.on_event, ordered=True, lane=aggregate_lane), "orchestrator")
    commands = ConsumerRunner(nc, js, ConsumerSpec(
        stream=subjects.COMMANDS_STREAM, durable="orchestrator-commands",
        filter_subjects=[subjects.COMMANDS_ALL], decode=decode_command,
        handler=orchestrator.on_command, ordered=True, lane=command_lane), "orchestrator")

    tasks = [asyncio.create_task(follower.run(), name="projection")]
    start_seq = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await projection.wait_for(start_seq, timeout_s=3600)
    log.info("read_models_caught_up", position=projection.position)
    await orchestrator.arm_pending_timers()
    await QueryResponder(nc, engine, projection, soul).subscribe()
    await nc.subscribe(subjects.QUERY_CONFIG, queue="orchestrator", cb=orchestrator.on_config)
    await nc.subscribe(subjects.CONTROL_CONFIG, queue="orchestrator", cb=orchestrator.on_config)
    tasks += [asyncio.create_task(reactor.run(), name="reactor"),
              asyncio.create_task(commands.run(), name="commands"),
              asyncio.create_task(orchestrator.publish_queue_depth(stop), name="queue-depth")]
    log.info("orchestrator_started", nats=settings.nats_url)

    await stop.wait()
    log.info("orchestrator_stopping")
    for runner in (follower, reactor, commands):
        runner.stop()
    orchestrator.cancel_timers()
    await asyncio.wait(tasks, timeout=5)
    await close(nc)
    engine.dispose()

"""Composition of the learner process: connection, read models, projection, reactor."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, LogFollower, close, connect, ensure_streams
from hermes_proto.codec import decode_event
from hermes_proto.events import (
    AnswersRecorded,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobFailed,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
)
from hermes_proto.projection import Projection
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_learner import domain, readmodel
from hermes_learner.config import LearnerSettings
from hermes_learner.desk import PatternDesk, PreferenceDesk, TemplateDesk
from hermes_learner.handlers import ClassificationPolicy, Learner, PatternPolicy, PreferencePolicy
from hermes_learner.templates import SEED_TEMPLATES

log = structlog.get_logger("hermes.learner")

SERVICE = "learner"
REACTOR = "learner-reactor"


def _policy(settings: LearnerSettings) -> domain.Policy:
    return domain.Policy(clarity_stop=settings.hermes_clarity_stop,
                         pattern_threshold=settings.hermes_pattern_threshold,
                         use_stats=settings.hermes_learning_enabled)


async def _first(work: Coroutine[Any, Any, Any], stopped: Coroutine[Any, Any, Any]) -> bool:
    """Await ``work`` unless ``stopped`` finishes first (a signal during a long catch-up); True if
    ``work`` finished."""
    work_task, stop_task = asyncio.ensure_future(work), asyncio.ensure_future(stopped)
    await asyncio.wait([work_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    for task in (work_task, stop_task):
        task.cancel()
    return work_task.done() and not work_task.cancelled()


async def run(settings: LearnerSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM); shuts down within about 5 seconds."""
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    configure_tracing(SERVICE)
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()

    nc = await connect(settings, SERVICE)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    engine = readmodel.make_engine(settings.db_url())
    with Session(engine) as session:
        readmodel.seed_templates(session, SEED_TEMPLATES)
        position = readmodel.load_position(session)
    projection = Projection(js, SERVICE, partial(readmodel.apply_batch, engine), position)
    prefs = PreferencePolicy(enabled=settings.hermes_learning_enabled,
                             threshold=settings.hermes_confidence_threshold,
                             ttl=timedelta(days=settings.hermes_preference_ttl_days))
    pattern_policy = PatternPolicy(threshold=settings.hermes_pattern_validation_threshold,
                                   min_validations=settings.hermes_pattern_min_validations)
    classification = ClassificationPolicy(enable_llm=settings.hermes_classification_enable_llm,
                                          timeout_s=settings.hermes_classification_timeout_seconds)
    learner = Learner(js, engine, projection, _policy(settings), settings.hermes_max_questions, prefs, pattern_policy,
                      classification)

    follower = LogFollower(js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, projection.handle_batch,
                           start_after=projection.position)
    reactor = ConsumerRunner(nc, js, ConsumerSpec(
        stream=subjects.EVENTS_STREAM, durable=REACTOR,
        # The job outcomes matter only with LLM classification on, but the filter stays the same either way so
        # turning it on or off never has to change an existing durable consumer.
        filter_subjects=[subjects.event_type_filter(t) for t in (DraftPresented, AnswersRecorded, ThreadRated,
                                                                 ThreadCompleted, ThreadFailed, ExecutionCompleted,
                                                                 ExecutionAbandoned, JobFailed)],
        decode=decode_event, handler=learner.on_event, ordered=True), SERVICE)

    tasks = [asyncio.create_task(follower.run(), name="projection")]
    start_seq = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    if await _first(projection.wait_for(start_seq, timeout_s=3600), stop.wait()):
        log.info("read_models_caught_up", position=projection.position, templates=len(SEED_TEMPLATES))
        tasks.append(asyncio.create_task(reactor.run(), name="reactor"))
        await TemplateDesk(nc, EventStore(js, SERVICE), engine, projection).subscribe()
        await PreferenceDesk(nc, EventStore(js, SERVICE), engine, projection, prefs).subscribe()
        await PatternDesk(nc, EventStore(js, SERVICE), engine, projection, prefs, pattern_policy).subscribe()
        log.info("learner_started", nats=settings.nats_url, learning_enabled=settings.hermes_learning_enabled,
                 llm_classification=classification.enable_llm)
        await stop.wait()
    log.info("learner_stopping")
    follower.stop()
    reactor.stop()
    if learner.classifier is not None:
        learner.classifier.cancel_timers()
    await asyncio.wait(tasks, timeout=5)
    await close(nc)
    engine.dispose()

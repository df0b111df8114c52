"""Composition of the learner process: connection, read model and its in-memory view, projection, reactor, desks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from sqlmodel import Session

from hermes_proto import keyring, subjects
from hermes_proto.bus import ConsumerRunner, ConsumerSpec, EventStore, LogFollower, close, connect, ensure_streams
from hermes_proto.codec import decode_event
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_learner import domain, tables
from hermes_learner.classifier import LlmClassifier
from hermes_learner.config import LearnerSettings
from hermes_learner.desk import PatternDesk, TemplateDesk
from hermes_learner.handlers import EVENT_HANDLERS, Deps, decide_later, learn_extracted, on_event
from hermes_learner.policies import ClassificationPolicy, PatternPolicy, Policies, PreferencePolicy
from hermes_learner.preference_desk import PreferenceDesk
from hermes_learner.projection import LearnerProjection
from hermes_learner.seeding import seed_templates
from hermes_learner.templates import SEED_TEMPLATES
from hermes_learner.timers import Timers
from hermes_learner.triggers import TriggerMatcher

log = structlog.get_logger("hermes.learner")

SERVICE = "learner"
REACTOR = "learner-reactor"
REACTION_EVENTS = tuple(EVENT_HANDLERS)
"""The events the reactor consumer takes: its subject filters are made from these."""


def policies_of(settings: LearnerSettings) -> Policies:
    """The decisions' policies from the learner's settings."""
    return Policies(
        questions=domain.Policy(
            clarity_stop=settings.hermes_clarity_stop,
            pattern_threshold=settings.hermes_pattern_threshold,
            use_stats=settings.hermes_learning_enabled,
        ),
        max_questions=settings.hermes_max_questions,
        prefs=PreferencePolicy(
            enabled=settings.hermes_learning_enabled,
            threshold=settings.hermes_confidence_threshold,
            ttl=timedelta(days=settings.hermes_preference_ttl_days),
        ),
        patterns=PatternPolicy(
            threshold=settings.hermes_pattern_validation_threshold,
            min_validations=settings.hermes_pattern_min_validations,
        ),
        classification=ClassificationPolicy(
            enable_llm=settings.hermes_classification_enable_llm,
            timeout_s=settings.hermes_classification_timeout_seconds,
        ),
    )


async def _first(work: Coroutine[Any, Any, Any], stopped: Coroutine[Any, Any, Any]) -> bool:
    """Await ``work`` unless ``stopped`` finishes first (a signal during a long catch-up); True if
    ``work`` finished."""
    work_task, stop_task = asyncio.ensure_future(work), asyncio.ensure_future(stopped)
    await asyncio.wait([work_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
    for task in (work_task, stop_task):
        task.cancel()
    return work_task.done() and not work_task.cancelled()


def open_read_model(url: str, js: Any) -> LearnerProjection:
    """The read model at ``url`` with the code's seed templates written, and its projection (blocking)."""
    engine = tables.make_engine(url)
    with Session(engine) as session:
        seed_templates(session, SEED_TEMPLATES)
    return LearnerProjection(engine, js)


async def run(settings: LearnerSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM); shuts down within about 5 seconds."""
    configure_logging(SERVICE, settings.log_level, settings.log_file)
    configure_tracing(SERVICE)
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()

    nc = await connect(settings, SERVICE)
    js = nc.jetstream()
    await ensure_streams(js, settings)
    await keyring.start(js, settings.hermes_seal_personal_data)
    projection = await asyncio.to_thread(open_read_model, settings.db_url(), js)
    engine = projection.engine
    policies = policies_of(settings)
    store = EventStore(js, SERVICE)
    deps = Deps(
        view=projection.view,
        projection=projection,
        store=store,
        policies=policies,
        engine=engine,
        triggers=TriggerMatcher(settings.hermes_trigger_timeout_ms / 1000),
    )
    timers = Timers()
    if policies.classification.enable_llm:
        deps.classifier = LlmClassifier(
            js,
            store,
            partial(decide_later, deps=deps),
            policies.classification.timeout_s,
            timers,
            learn=partial(learn_extracted, deps=deps),
        )

    follower = LogFollower(
        js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, projection.handle_batch, start_after=projection.position
    )
    reactor = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=REACTOR,
            filter_subjects=[subjects.event_type_filter(t) for t in REACTION_EVENTS],
            decode=decode_event,
            handler=partial(on_event, deps=deps),
            ordered=True,
        ),
        SERVICE,
    )

    tasks = [asyncio.create_task(follower.run(), name="projection")]
    start_seq = await projection.last_sequence()
    if await _first(projection.wait_for(start_seq, timeout_s=3600), stop.wait()):
        log.info("read_models_caught_up", position=projection.position, templates=len(SEED_TEMPLATES))
        tasks.append(asyncio.create_task(reactor.run(), name="reactor"))
        await TemplateDesk(nc, EventStore(js, SERVICE), engine, projection).subscribe()
        await PreferenceDesk(nc, EventStore(js, SERVICE), engine, projection, policies.prefs).subscribe()
        await PatternDesk(
            nc, EventStore(js, SERVICE), engine, projection, policies.prefs, policies.patterns
        ).subscribe()
        log.info(
            "learner_started",
            nats=settings.nats_url,
            learning_enabled=settings.hermes_learning_enabled,
            llm_classification=policies.classification.enable_llm,
        )
        await stop.wait()
    log.info("learner_stopping")
    follower.stop()
    reactor.stop()
    timers.cancel_all()
    await asyncio.wait(tasks, timeout=5)
    await projection.stop()
    deps.triggers.close()
    await close(nc)
    engine.dispose()

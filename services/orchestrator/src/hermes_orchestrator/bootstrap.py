"""Composition of the orchestrator process: connections, read models and the fold, consumers, queries, timers."""

from __future__ import annotations

import asyncio

import structlog
from prometheus_client import Gauge

from hermes_proto import keyring, subjects
from hermes_proto.bus import (
    ConsumerRunner,
    ConsumerSpec,
    EventStore,
    LogFollower,
    aggregate_lane,
    close,
    command_lane,
    connect,
    ensure_streams,
)
from hermes_proto.codec import decode_event
from hermes_proto.forgetting import RetentionPolicy
from hermes_proto.partitions import Partition
from hermes_proto.rpc import answering
from hermes_proto.service import stop_on_signals
from hermes_proto.telemetry import configure_logging, configure_tracing, start_metrics_server

from hermes_orchestrator import domain, intake, schedule_runtime
from hermes_orchestrator.agent_handlers import AgentDeps, ToolClient
from hermes_orchestrator.agent_queries import AgentQueries
from hermes_orchestrator.config import OrchestratorSettings
from hermes_orchestrator.decisions import Decisions
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.forgetting import Forgetting
from hermes_orchestrator.handlers import EVENT_HANDLERS, Deps
from hermes_orchestrator.historian import Historian, MemoryHandlers
from hermes_orchestrator.memory_queries import MemoryQueries
from hermes_orchestrator.permissions_file import PermissionsFile
from hermes_orchestrator.projection import Projection
from hermes_orchestrator.proposal_queries import ProposalQueries
from hermes_orchestrator.proposals import Improver, ProposalHandlers
from hermes_orchestrator.queries import QueryResponder
from hermes_orchestrator.readmodel import make_engine
from hermes_orchestrator.schedule_handlers import ScheduleHandlers
from hermes_orchestrator.schedule_queries import ScheduleQueries
from hermes_orchestrator.schedule_triggers import TriggerWatcher
from hermes_orchestrator.settings import UserLimits, on_config
from hermes_orchestrator.soul import SoulFile
from hermes_orchestrator.timers import Timers

log = structlog.get_logger("hermes.orchestrator")

REACTION_EVENTS = tuple(dict.fromkeys((*EVENT_HANDLERS, *schedule_runtime.REACTION_EVENTS)))
QUEUE_DEPTH = Gauge("hermes_queue_depth", "Open jobs (queued, dispatched, running, retrying) by priority", ["priority"])
QUEUE_WAITING_STEPS = Gauge("hermes_queue_waiting_steps", "Workflow steps waiting for their dependencies")


def limits_of(settings: OrchestratorSettings) -> domain.Limits:
    """The deployment's limits from its settings (users' editable settings apply on top: :class:`UserLimits`)."""
    return domain.Limits(
        max_questions=settings.hermes_max_questions,
        answer_timeout_s=settings.hermes_answer_timeout_seconds,
        max_tokens=settings.hermes_draft_max_tokens,
        temperature=settings.hermes_draft_temperature,
        job_timeout_s=settings.hermes_job_timeout_seconds or None,
        workflow_max_steps=settings.hermes_workflow_max_steps,
        workflow_timeout_s=settings.hermes_workflow_timeout_minutes * 60 or None,
        preference_threshold=(settings.hermes_confidence_threshold if settings.hermes_learning_enabled else None),
        memory_token_budget=settings.hermes_memory_token_budget,
        memory_max_items=settings.hermes_memory_max_items,
    )


async def publish_queue_depth(fold: ThreadFold, stop: asyncio.Event, interval_s: float = 2.0) -> None:
    """Every ``interval_s`` seconds, set ``hermes_queue_depth{priority}`` and ``hermes_queue_waiting_steps``."""
    while not stop.is_set():
        try:
            depth = fold.queue_depth()
            for priority in range(1, 11):
                QUEUE_DEPTH.labels(str(priority)).set(depth.by_priority.get(str(priority), 0))
            QUEUE_WAITING_STEPS.set(depth.waiting_steps)
        except Exception as exc:  # a metric must never stop the service
            log.warning("queue_depth_failed", error=repr(exc))
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
        except TimeoutError:
            pass


async def run(settings: OrchestratorSettings, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGINT/SIGTERM)."""
    configure_logging("orchestrator", settings.log_level, settings.log_file)
    configure_tracing("orchestrator")
    start_metrics_server(settings.metrics_port)
    stop = stop or stop_on_signals()

    nc = await connect(settings, "orchestrator")
    js = nc.jetstream()
    await ensure_streams(js, settings)
    keys = await keyring.start(js, settings.hermes_seal_personal_data)
    engine = make_engine(settings.db_url())
    partition = Partition.of(settings)
    projection = await asyncio.to_thread(Projection, engine, js, partition)
    fold = projection.fold
    soul = SoulFile(settings.soul_path())
    soul.ensure()
    store = EventStore(js, "orchestrator")
    limits = UserLimits(limits_of(settings), fold)
    timers = Timers(store, fold)
    agents = AgentDeps(
        home=settings.hermes_home,
        permissions=PermissionsFile(settings.permissions_path()),
        tools=ToolClient(nc),
        approval_timeout_s=settings.hermes_approval_timeout_seconds,
    )
    decisions = Decisions(
        Deps(fold=fold, limits=limits, soul=soul, engine=engine, timers=timers, agents=agents),
        store,
        projection,
        partition,
    )
    clock = schedule_runtime.ScheduleClock(timers, fold.schedules, settings.hermes_schedule_grace_seconds)
    if partition.index == 0:
        decisions.schedules = ScheduleHandlers(
            fold,
            store,
            projection,
            clock,
            decisions._lock,
            decisions._append,
            settings.hermes_schedule_grace_seconds,
        )
    if partition.index == 0:
        decisions.memory = MemoryHandlers(
            fold, engine, decisions._lock, decisions._append, settings.hermes_historian_window_days
        )
    if partition.index == 0:
        decisions.forgetting = Forgetting(
            js,
            keys,
            fold,
            decisions._append,
            RetentionPolicy.parse(settings.hermes_retention),
            settings.hermes_retention_interval_minutes * 60,
        )
    if partition.index == 0:
        decisions.proposals = ProposalHandlers(
            fold.proposals, engine, decisions._lock, decisions._append, settings.hermes_self_improve_window_days
        )
    improver = Improver(
        engine, store, settings.hermes_self_improve_interval_hours * 3600, settings.hermes_self_improve_window_days
    )
    historian = Historian(
        engine, store, settings.hermes_historian_interval_minutes * 60, settings.hermes_historian_window_days
    )
    watcher = TriggerWatcher(fold.schedules, store, settings.hermes_home, settings.hermes_schedule_poll_seconds)

    follower = LogFollower(
        js, subjects.EVENTS_STREAM, subjects.EVENTS_ALL, projection.handle_batch, start_after=projection.position
    )
    # The reactor's filters come from the events it handles. The commands consumer takes all of hermes.cmd.> (its
    # partition's share of it): every command is the orchestrator's (COMMAND_HANDLERS), one of an unknown type is
    # dead-lettered. Each partition has its own durables.
    reactor = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=partition.suffix("orchestrator-reactor"),
            filter_subjects=[subjects.event_type_filter(t) for t in REACTION_EVENTS],
            decode=decode_event,
            handler=decisions.on_event,
            ordered=True,
            lane=aggregate_lane,
        ),
        "orchestrator",
    )
    commands = ConsumerRunner(
        nc,
        js,
        ConsumerSpec(
            stream=subjects.COMMANDS_STREAM,
            durable=partition.suffix("orchestrator-commands"),
            filter_subjects=partition.command_filters(),
            decode=intake.decode,
            handler=decisions.on_command,
            ordered=True,
            lane=command_lane,
        ),
        "orchestrator",
    )

    tasks = [asyncio.create_task(follower.run(), name="projection")]
    runners: list[ConsumerRunner] = []
    start_seq = await projection.last_sequence()
    await projection.require_folded(start_seq, timeout_s=3600)
    log.info("state_caught_up", position=projection.folded, open_threads=len(fold.states))

    async def rows_caught_up() -> None:  # the read model follows the fold; say when it holds the start's log
        if await projection.wait_for(start_seq, timeout_s=3600):
            log.info("read_models_caught_up", position=projection.position)

    tasks.append(asyncio.create_task(rows_caught_up(), name="rows-caught-up"))
    timers.arm_pending()
    if partition.index == 0:
        clock.arm_all()
        triggers = ConsumerRunner(
            nc,
            js,
            ConsumerSpec(
                stream=subjects.INBOX_STREAM,
                durable="orchestrator-triggers",
                filter_subjects=[subjects.INBOX_EVENTS_ALL],
                decode=bytes,
                handler=watcher.on_inbox_event,
                ordered=True,
            ),
            "orchestrator",
        )
        runners.append(triggers)
        tasks += [
            asyncio.create_task(triggers.run(), name="schedule-triggers"),
            asyncio.create_task(watcher.run(stop), name="schedule-watcher"),
            asyncio.create_task(historian.run(stop), name="historian"),
            asyncio.create_task(improver.run(stop), name="improver"),
            asyncio.create_task(decisions.forgetting.run(stop), name="retention"),
        ]
    responder = QueryResponder(nc, engine, projection, fold, soul)
    await responder.subscribe()
    await AgentQueries(responder, agents.profiles).subscribe()
    await ScheduleQueries(responder).subscribe()
    await MemoryQueries(responder).subscribe()
    await ProposalQueries(responder).subscribe()

    async def config(msg) -> None:  # noqa: ANN001
        await on_config(msg, limits, store, projection)

    for subject in (subjects.QUERY_CONFIG, subjects.CONTROL_CONFIG):
        await nc.subscribe(subject, queue="orchestrator", cb=answering("orchestrator", config))
    tasks += [
        asyncio.create_task(reactor.run(), name="reactor"),
        asyncio.create_task(commands.run(), name="commands"),
        asyncio.create_task(publish_queue_depth(fold, stop), name="queue-depth"),
    ]
    log.info("orchestrator_started", nats=settings.nats_url, partition=partition.index, partitions=partition.count)

    await stop.wait()
    log.info("orchestrator_stopping")
    for runner in (follower, reactor, commands, *runners):
        runner.stop()
    timers.cancel_all()
    await asyncio.wait(tasks, timeout=5)
    await projection.stop()
    await close(nc)
    engine.dispose()

"""The dispatcher: places every open job of the read model on a backend, in priority order, within health,
budgets, concurrency and rate limits; fails over after retryable failures; records cost; raises budget alerts.

The log is the queue: a job is open from its ``JobQueued`` until ``ExecutionCompleted`` or
``ExecutionAbandoned``, and the read model (``router_jobs``) says where each one stands, so a restarted router
continues exactly where the log stands. Rounds run one at a time; after appending, a round waits until its
own events are projected, so the next round never places a job twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import msgspec
import structlog
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from nats.aio.client import Client as NATS
from opentelemetry.trace import SpanKind
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hermes_proto import events as ev
from hermes_proto import subjects
from hermes_proto.backends import BackendConfig
from hermes_proto.base import ChatMessage, Event
from hermes_proto.bus import EventStore
from hermes_proto.codec import encode
from hermes_proto.costs import cost_cents
from hermes_proto.events import (
    BackendSelected,
    BudgetThresholdReached,
    CostRecorded,
    ExecutionAbandoned,
    JobCancelled,
    JobDeferred,
)
from hermes_proto.execution import CancelExecution, ExecutionRequested
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.partitions import SINGLE, Partition
from hermes_proto.projection import Projection
from hermes_proto.telemetry import extract_context, tracer
from hermes_proto.tools import ToolSpec

from hermes_router import domain, readmodel
from hermes_router.config import PriceTable, RouterSettings
from hermes_router.health import HealthMonitor
from hermes_router.metrics import (
    ABANDONED,
    BACKEND_ENABLED,
    BACKEND_IN_FLIGHT,
    DAILY_BUDGET,
    DEFERRED,
    DISPATCH_SECONDS,
    FAILOVERS,
    QUEUED,
    ROUND_SECONDS,
    SELECTIONS,
    SPENT_TODAY,
)
from hermes_router.readmodel import RouterJobRow
from hermes_router.view import RouterView, Snapshot, read_snapshot  # noqa: F401 (read_snapshot re-exported)

log = structlog.get_logger("hermes.router")
_messages = msgspec.json.Decoder(list[ChatMessage])
_tools = msgspec.json.Decoder(list[ToolSpec])
IDLE_ROUND_S = 1.0  # deadlines, cool-downs and failover delays are checked at least this often
# Events that can change what a round decides at once: a job to place, capacity freed, a failure to fail over,
# a cancellation, a backend going up, down, on or off. The rest (the router's own outputs, a thread's progress,
# ratings) wait for the next round; waking on every event made ~5 rounds per job (issue 9's profile).
WAKE_EVENTS = (
    ev.JobQueued,
    ev.ExecutionCompleted,
    ev.ExecutionFailed,
    ev.JobCancelled,
    ev.BackendMarkedUnhealthy,
    ev.BackendRecovered,
    ev.BackendEnabled,
    ev.BackendDisabled,
)


def stats_of(row: readmodel.BackendStatRow | None) -> domain.Stats:
    if row is None:
        return domain.Stats()
    return domain.Stats(row.calls, row.successes, row.latency_ms_sum, row.latency_n, row.rating_sum, row.rating_n)


class Router:
    """One router process. ``health`` supplies live health; ``projection`` the read-your-writes wait."""

    def __init__(
        self,
        nc: NATS,
        settings: RouterSettings,
        registry: dict[str, BackendConfig],
        engine: Engine,
        projection: Projection,
        health: HealthMonitor,
        view: RouterView,
        partition: Partition = SINGLE,
    ) -> None:
        self.nc = nc
        js = self.js = nc.jetstream()
        self.settings = settings
        self.registry = registry
        self.engine = engine
        self.partition = partition
        """The threads whose jobs this router places (all but with several partitions); every router folds every
        job, so each sees the others' placements, in-flight calls and spend."""
        self.view = view
        """The decision state in memory (rounds read it, never SQLite)."""
        self.projection = projection
        self.health = health
        self.store = EventStore(js, "router")
        self.prices = PriceTable(settings.hermes_price_table)
        self.policy = domain.Policy(
            criteria=settings.hermes_default_selection_criteria,
            primary=(settings.hermes_primary_backend or "").lower() or None,
            fallback=(settings.hermes_fallback_backend or "").lower() or None,
            prefer_local=settings.hermes_prefer_local,
            prefer_free=settings.hermes_prefer_free,
            job_type_routes=settings.job_type_routes(),
            balancing=settings.hermes_load_balancing_strategy if settings.hermes_load_balancing_enabled else None,
        )
        self.balancer = (
            domain.Balancer(self.policy.balancing, settings.backend_weights()) if self.policy.balancing else None
        )
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._rates = {n: RateLimitItemPerMinute(b.rate_limit) for n, b in registry.items() if b.rate_limit}
        self.wake = asyncio.Event()
        self._lock = asyncio.Lock()
        # job id -> its analysis: a queued job's fields never change, and a saturated backend leaves the same
        # jobs waiting round after round (classifying each again made a round O(queue × prompt size)).
        self._needs: dict[str, domain.JobNeeds] = {}
        if settings.hermes_daily_budget_cents is not None:
            DAILY_BUDGET.set(settings.hermes_daily_budget_cents)

    # ---- views ------------------------------------------------------------------------------------

    def enabled(self, name: str, snap: Snapshot) -> bool:
        row = snap.states.get(name)
        return row.enabled if row is not None and row.enabled is not None else self.registry[name].enabled

    def backend_states(self, snap: Snapshot, now: datetime) -> dict[str, domain.BackendState]:
        result = {}
        for name, cfg in self.registry.items():
            row = snap.states.get(name)
            price = self.prices.price(cfg, cfg.default_model)
            item = self._rates.get(name)
            result[name] = domain.BackendState(
                config=cfg,
                stats=stats_of(snap.stats.get(name)),
                health=self.health.state(name),
                enabled=self.enabled(name, snap),
                in_flight=snap.in_flight.get(name, 0),
                rate_ok=item is None or self._limiter.test(item, name),
                cooling_until=readmodel.aware(row.cooling_until) if row is not None else None,
                price_in=price.input,
                price_out=price.output,
                served_models=self.health.served_models(name),
            )
            BACKEND_IN_FLIGHT.labels(name).set(snap.in_flight.get(name, 0))
            BACKEND_ENABLED.labels(name).set(1 if result[name].enabled else 0)
        return result

    def budget(self, snap: Snapshot) -> domain.Budget:
        s = self.settings
        return domain.Budget(
            spent_today=snap.spent_today,
            reserved=snap.reserved,
            project_spent=snap.project_spent,
            project_reserved=snap.project_reserved,
            daily=s.hermes_daily_budget_cents,
            projects=s.project_budgets(),
            max_per_job=s.hermes_max_cost_per_job_cents,
            min_remote=s.hermes_min_remote_budget_cents,
        )

    def needs(self, job: RouterJobRow) -> domain.JobNeeds:
        """The job's :class:`domain.JobNeeds`, analysed once per job and kept while it waits."""
        cached = self._needs.get(job.job_id)
        if cached is None:
            cached = self._needs[job.job_id] = self.analyse(job)
        return cached

    @staticmethod
    def analyse(job: RouterJobRow) -> domain.JobNeeds:
        return domain.analyse(
            job.job_id,
            job.kind,
            _messages.decode(job.messages_json),
            job_type=job.job_type,
            private=job.private,
            project=job.project,
            priority=job.priority,
            max_tokens=job.max_tokens,
            backend=job.requested_backend,
            model=job.requested_model,
            requires=json.loads(job.requires_json),
            criteria=job.criteria,
        )

    # ---- the loop ---------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run rounds until ``stop``: at once when woken (a new job, a finished call, a health change),
        else every ``IDLE_ROUND_S`` seconds. Never raises."""
        try:
            await self.republish_dispatched()
        except Exception as exc:  # rounds must run regardless; a lost request is re-sent at the next start
            log.exception("republish_failed", error=repr(exc))
        while not stop.is_set():
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=IDLE_ROUND_S)
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.round()
            except Exception as exc:
                log.exception("round_failed", error=repr(exc))
                await asyncio.sleep(0.5)

    async def round(self) -> None:
        async with self._lock:
            started = time.perf_counter()
            now = utcnow()
            snap = self.view.snapshot(now)
            SPENT_TODAY.set(snap.spent_today)
            plan = _Round(self, snap, now)
            owns = self.partition.owns
            for job in snap.uncosted:
                if owns(job.thread_id):
                    plan.record_cost(job)
            if self.partition.index == 0:
                plan.budget_alerts()
            for job in snap.jobs:
                if owns(job.thread_id):
                    plan.place(job)
            waiting = {job.job_id for job in snap.jobs}
            self._needs = {job_id: n for job_id, n in self._needs.items() if job_id in waiting}
            self._queue_gauge(snap)
            if plan.outputs:
                # One publish per job, concurrently, each inside a span that continues the job's trace.
                seqs = await asyncio.gather(*(self._publish(output) for output in plan.outputs.values()))
                await self.projection.require(max(max(s) for s in seqs), timeout_s=30)
            ROUND_SECONDS.observe(time.perf_counter() - started)

    async def _publish(self, output: _Output) -> list[int]:
        """Append one job's events, then publish its execution requests, in a ``router.dispatch`` span whose
        parent is the job's ``JobQueued`` trace context (none for budget alerts); returns the sequences."""
        job = output.job
        attributes = {"hermes.job_id": job.job_id, "hermes.thread_id": job.thread_id} if job else {}
        parent = extract_context(json.loads(job.trace_headers_json)) if job else None
        with tracer.start_as_current_span(
            "router.dispatch", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        ):
            seqs = await self.store.append(output.events)
            for subject, request in output.requests:
                await self.store.request_execution(subject, encode(request), request.request_id, request.thread_id)
        return seqs

    def _queue_gauge(self, snap: Snapshot) -> None:
        counts: dict[int, int] = {p: 0 for p in range(1, 11)}
        for job in snap.jobs:
            counts[job.priority] = counts.get(job.priority, 0) + 1
        for priority, n in counts.items():
            QUEUED.labels(str(priority)).set(n)

    def execution_request(self, job: RouterJobRow, selection: BackendSelected, request_id: str) -> ExecutionRequested:
        return ExecutionRequested(
            request_id=request_id,
            thread_id=job.thread_id,
            job_id=job.job_id,
            backend=selection.backend,
            model=selection.model,
            messages=_messages.decode(job.messages_json),
            max_tokens=job.max_tokens,
            temperature=job.temperature,
            timeout_s=self.registry[selection.backend].timeout,
            tools=_tools.decode(job.tools_json),
            tool_choice=job.tool_choice,
            correlation_id=job.correlation_id,
            requested_at=selection.occurred_at,
        )

    async def stop_cancelled(self, events: list[Event], jobs: dict[str, Any]) -> None:
        """For each live ``JobCancelled`` of a job that was dispatched, and each ``BackendSelected`` of a job
        cancelled meanwhile (a round that read it before), tell its backend's edges (core NATS
        ``hermes.cancel.<backend>``) to stop the model call or drop the request. Best effort: an edge that misses
        it finishes the call; the orchestrator ignores the result and the router still records its cost. ``jobs``:
        the job rows the same write changed, by id."""
        candidates = [e for e in events if isinstance(e, JobCancelled | BackendSelected)]
        if not candidates:
            return
        running_on = {
            e.job_id: row.backend
            for e in candidates
            if (row := jobs.get(e.job_id)) is not None
            and row.status == readmodel.CANCELLED
            and self.partition.owns(row.thread_id)
        }
        for e in candidates:
            backend = running_on.get(e.job_id)
            if backend is None or (isinstance(e, BackendSelected) and e.backend != backend):
                continue
            reason = e.reason if isinstance(e, JobCancelled) else "cancelled"
            await self.nc.publish(
                subjects.cancel_subject(backend),
                encode(CancelExecution(job_id=e.job_id, thread_id=e.aggregate_id, reason=reason)),
            )
            log.info("execution_cancel_sent", job_id=e.job_id, thread_id=e.aggregate_id, backend=backend, reason=reason)

    async def republish_dispatched(self) -> None:
        """At start: re-publish the request of every job dispatched but not started (a router killed between
        appending ``BackendSelected`` and publishing). Same message id: JetStream drops it if it arrived."""

        def read() -> list[tuple[RouterJobRow, readmodel.SelectionRow]]:
            with Session(self.engine) as s:
                rows = s.exec(
                    select(RouterJobRow, readmodel.SelectionRow)
                    .join(readmodel.SelectionRow, readmodel.SelectionRow.event_id == RouterJobRow.selection_event_id)
                    .where(RouterJobRow.status == readmodel.DISPATCHED, col(RouterJobRow.kind) != "compare")
                )
                return list(rows)

        for job, sel in await asyncio.to_thread(read):
            if not self.partition.owns(job.thread_id):
                continue
            if sel.backend not in self.registry:  # removed from the configuration since: its round abandons it
                log.warning("execution_not_republished", job_id=job.job_id, backend=sel.backend)
                continue
            selected = BackendSelected(
                event_id=sel.event_id,
                aggregate_id=job.thread_id,
                occurred_at=sel.selected_at,
                correlation_id=job.correlation_id,
                job_id=job.job_id,
                backend=sel.backend,
                model=sel.model,
                reason=sel.reason,
                attempt=sel.attempt,
            )
            request = self.execution_request(job, selected, request_id_for(job.cause_event_id, sel.attempt))
            await self.store.request_execution(
                subjects.exec_subject(sel.backend), encode(request), request.request_id, request.thread_id
            )
            log.info("execution_republished", job_id=job.job_id, backend=sel.backend)


def selected_id_for(cause_event_id: str, attempt: int) -> str:
    return derived_id(cause_event_id, "backend_selected" if attempt == 1 else f"backend_selected-{attempt}")


def request_id_for(cause_event_id: str, attempt: int) -> str:
    return derived_id(cause_event_id, "execution_requested" if attempt == 1 else f"execution_requested-{attempt}")


@dataclass
class _Output:
    """What a round appends and publishes for one job (``job`` None: events of no job, e.g. budget alerts)."""

    job: RouterJobRow | None
    events: list[Event] = field(default_factory=list)
    requests: list[tuple[str, ExecutionRequested]] = field(default_factory=list)


class _Round:
    """The decisions of one round over one snapshot; placements update the in-memory view, so later jobs of
    the same round see the capacity and budget earlier ones took."""

    def __init__(self, router: Router, snap: Snapshot, now: datetime) -> None:
        self.router = router
        self.snap = snap
        self.now = now
        self.states = router.backend_states(snap, now)
        self.budget = router.budget(snap)
        self.outputs: dict[str | None, _Output] = {}

    def output(self, job: RouterJobRow | None) -> _Output:
        key = job.job_id if job is not None else None
        if key not in self.outputs:
            self.outputs[key] = _Output(job)
        return self.outputs[key]

    def _env(self, job: RouterJobRow, name: str) -> dict:
        return dict(
            event_id=derived_id(job.cause_event_id, name),
            aggregate_id=job.thread_id,
            occurred_at=self.now,
            correlation_id=job.correlation_id,
            causation_id=job.cause_event_id,
        )

    def record_cost(self, job: RouterJobRow) -> None:
        cents = cost_cents(job.prompt_tokens, job.completion_tokens, job.price_in, job.price_out)
        env = self._env(job, f"cost_recorded-{job.attempts}")
        env["causation_id"] = job.completion_event_id
        self.output(job).events.append(
            CostRecorded(
                **env,
                job_id=job.job_id,
                backend=job.backend or "",
                model=job.model or "",
                project=job.project,
                prompt_tokens=job.prompt_tokens,
                completion_tokens=job.completion_tokens,
                cost_cents=cents,
            )
        )

    def budget_alerts(self) -> None:
        s = self.router.settings
        threshold = s.hermes_budget_alert_threshold
        checks = [("daily", "all", s.hermes_daily_budget_cents, self.snap.spent_today)]
        checks += [("project", p, b, self.snap.project_spent.get(p, 0.0)) for p, b in s.project_budgets().items()]
        for scope, name, budget, spent in checks:
            if not budget or spent < threshold * budget:
                continue
            aggregate = f"{scope}-{name}-{self.snap.day}"
            if aggregate in self.snap.alerted:
                continue
            self.output(None).events.append(
                BudgetThresholdReached(
                    event_id=derived_id(aggregate, "budget_threshold_reached"),
                    aggregate_id=aggregate,
                    occurred_at=self.now,
                    correlation_id=aggregate,
                    scope=scope,
                    name=name,
                    period=self.snap.day,
                    spent_cents=round(spent, 6),
                    budget_cents=budget,
                    threshold=threshold,
                )
            )
            log.warning("budget_threshold_reached", scope=scope, name=name, spent_cents=spent, budget_cents=budget)

    def place(self, job: RouterJobRow) -> None:
        s = self.router.settings
        excluded: set[str] = set()
        failover_from = None
        attempt = job.attempts + 1
        if job.status == readmodel.FAILED:
            if job.kind == "compare":
                self._abandon(job, job.last_error_code or "failed", job.last_error_message or "")
                return
            retries = s.hermes_max_failover_attempts if job.max_retries is None else job.max_retries
            decision = domain.decide_failover(
                retryable=job.last_retryable,
                attempts=job.attempts,
                max_failover_attempts=retries,
                failed_at_epoch_s=readmodel.aware(job.last_failed_at).timestamp() if job.last_failed_at else 0.0,
                delay_s=domain.backoff_delay(
                    job.job_id, job.attempts, s.hermes_failover_delay_seconds, s.hermes_retry_max_delay_seconds
                ),
                retry_after_s=job.retry_after_s,
                failed_backends=json.loads(job.failed_backends_json),
                strategy=s.hermes_failover_strategy,
            )
            if not decision.retry:
                self._abandon(
                    job, job.last_error_code or "failed", f"{job.last_error_message or ''} ({decision.reason})".strip()
                )
                return
            if self.now.timestamp() < decision.due_epoch_s:
                return
            excluded, failover_from = set(decision.excluded), job.backend
        needs = self.router.needs(job)
        selection = domain.select(
            self.states,
            needs,
            self.budget,
            self.router.policy,
            self.now,
            excluded=excluded,
            attempt=attempt,
            balancer=self.router.balancer,
        )
        if selection.chosen is None:
            self._wait(job, selection)
            return
        self._dispatch(job, needs, selection, attempt, failover_from)

    def _dispatch(
        self,
        job: RouterJobRow,
        needs: domain.JobNeeds,
        selection: domain.Selection,
        attempt: int,
        failover_from: str | None,
    ) -> None:
        chosen = selection.chosen
        assert chosen is not None
        env = self._env(job, "")
        env["event_id"] = selected_id_for(job.cause_event_id, attempt)
        event = BackendSelected(
            **env,
            job_id=job.job_id,
            backend=chosen.backend,
            model=chosen.model,
            reason=selection.reason,
            criteria=selection.criteria,
            candidates=selection.candidates,
            attempt=attempt,
            strategy=selection.strategy,
            job_type=needs.job_type,
            project=needs.project,
            private=needs.private,
            estimated_cost_cents=chosen.estimated_cost_cents,
            price_in_cents_per_mtok=selection.price_in,
            price_out_cents_per_mtok=selection.price_out,
            failover_from=failover_from,
        )
        request = self.router.execution_request(job, event, request_id_for(job.cause_event_id, attempt))
        self.output(job).events.append(event)
        self.output(job).requests.append((subjects.exec_subject(chosen.backend), request))
        state = self.states[chosen.backend]
        self.states[chosen.backend] = replace(state, in_flight=state.in_flight + 1)
        self.budget = self.budget.reserve(needs.project, chosen.estimated_cost_cents)
        item = self.router._rates.get(chosen.backend)
        if item is not None:
            self.router._limiter.hit(item, chosen.backend)
            self.states[chosen.backend] = replace(
                self.states[chosen.backend], rate_ok=self.router._limiter.test(item, chosen.backend)
            )
        SELECTIONS.labels(chosen.backend, selection.strategy).inc()
        if failover_from:
            FAILOVERS.labels(failover_from).inc()
        if attempt == 1:
            DISPATCH_SECONDS.observe(max(0.0, (self.now - readmodel.aware(job.queued_at)).total_seconds()))
        log.info(
            "backend_selected",
            job_id=job.job_id,
            thread_id=job.thread_id,
            correlation_id=job.correlation_id,
            backend=chosen.backend,
            model=chosen.model,
            attempt=attempt,
            strategy=selection.strategy,
            reason=selection.reason,
        )

    def _wait(self, job: RouterJobRow, selection: domain.Selection) -> None:
        # A saturated backend frees up by itself: such a job waits its turn in priority order, however long.
        # Other waits are bounded, counted from the queueing or, for a failover, from the failed attempt.
        # Without HERMES_NO_BACKEND_WAIT_SECONDS a job waits until its own timeout (the orchestrator cancels it).
        wait_s = self.router.settings.hermes_no_backend_wait_seconds
        waiting_since = job.last_failed_at if job.status == readmodel.FAILED and job.last_failed_at else job.queued_at
        expired = wait_s is not None and self.now >= readmodel.aware(waiting_since) + timedelta(seconds=wait_s)
        if selection.permanent or (expired and selection.wait_reason != "saturated"):
            code = (
                selection.wait_reason
                if selection.wait_reason in ("over_budget", "no_capable_backend")
                else "no_backend"
            )
            self._abandon(job, code, selection.reason)
            return
        if job.deferred_reason != selection.wait_reason:
            env = self._env(job, "")
            env["event_id"] = new_id()  # a reason may come back later; each deferral is its own fact
            self.output(job).events.append(
                JobDeferred(
                    **env,
                    job_id=job.job_id,
                    reason=selection.wait_reason or "no_backend",
                    detail=selection.reason[:1000],
                )
            )
            DEFERRED.labels(selection.wait_reason or "no_backend").inc()
            log.info(
                "job_deferred",
                job_id=job.job_id,
                thread_id=job.thread_id,
                reason=selection.wait_reason,
                detail=selection.reason[:300],
            )

    def _abandon(self, job: RouterJobRow, code: str, message: str) -> None:
        self.output(job).events.append(
            ExecutionAbandoned(
                **self._env(job, f"execution_abandoned-{job.attempts}"),
                job_id=job.job_id,
                error_code=code,
                message=message[:2000],
                attempts=job.attempts,
            )
        )
        ABANDONED.labels(code).inc()
        log.warning(
            "execution_abandoned",
            job_id=job.job_id,
            thread_id=job.thread_id,
            error_code=code,
            attempts=job.attempts,
            message=message[:300],
        )

"""The router's SQLite read models, projected from the log (``$HERMES_HOME/router.db``).

Tables: ``router_jobs`` (every job the router must place, its attempts, failures and cost), ``backend_stats``
(calls, successes, latency, ratings, tokens, cost per backend), ``backend_state`` (health, runtime
enable/disable, 429 cool-down), ``spend`` (cents per UTC day, project and backend), ``selections`` (every
``BackendSelected`` with its candidates), ``thread_drafts``/``thread_ratings`` (which backend wrote the draft a
user rated), ``budget_alerts`` and ``projection_position``. Every value comes from an event, timestamps
included, so a replay into an empty database yields identical rows, and identical scores and spend. A
``PersonalDataForgotten`` deletes the rows of the threads it names (:mod:`hermes_router.forgetting`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import singledispatch

import msgspec
from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from hermes_proto import events as ev
from hermes_proto import rowstore, sqlstore
from hermes_proto.base import Event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.rowstore import RowStore, rows

PROJECTION = "router"
# Job statuses. failed: the last attempt failed and the router has not decided yet (retry or abandon).
QUEUED, DISPATCHED, RUNNING, FAILED, DONE, ABANDONED = "queued", "dispatched", "running", "failed", "done", "abandoned"
CANCELLED = "cancelled"
OPEN = (QUEUED, DISPATCHED, RUNNING, FAILED)


class RouterTable(SQLModel, registry=registry()):
    """Base of the router's tables: their own metadata, so they never clash with another service's."""


class RouterJobRow(RouterTable, table=True):
    __tablename__ = "router_jobs"

    job_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    kind: str
    priority: int = 5
    job_type: str | None = None
    private: bool = False
    project: str = "default"
    requested_backend: str | None = None
    requested_model: str | None = None
    requires_json: str = "[]"
    trace_headers_json: str = "{}"
    """The W3C trace context (``traceparent``, ``tracestate``) of the ``JobQueued`` message, so the router's
    dispatch continues the job's trace."""
    criteria: str | None = None
    messages_json: str = "[]"
    tools_json: str = "[]"
    tool_choice: str | None = None
    """The job's ``JobQueued.tools`` (JSON list of ``ToolSpec``), passed on to its ``ExecutionRequested``."""
    max_tokens: int = 256
    temperature: float = 0.7
    max_retries: int | None = None
    correlation_id: str = ""
    cause_event_id: str = ""
    queued_seq: int = 0
    queued_at: datetime
    status: str = Field(default=QUEUED, index=True)
    attempts: int = 0
    backend: str | None = None
    model: str | None = None
    selected_at: datetime | None = None
    selection_event_id: str | None = None
    failed_backends_json: str = "[]"
    last_error_code: str | None = None
    last_error_message: str | None = None
    last_retryable: bool = True
    last_failed_at: datetime | None = None
    retry_after_s: float | None = None
    estimated_cost_cents: float = 0.0
    price_in: float = 0.0
    price_out: float = 0.0
    deferred_reason: str | None = None
    completion_event_id: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_recorded: bool = False
    cost_cents: float = 0.0
    finished_at: datetime | None = None


class BackendStatRow(RouterTable, table=True):
    __tablename__ = "backend_stats"

    backend: str = Field(primary_key=True)
    calls: int = 0
    successes: int = 0
    failures: int = 0
    latency_ms_sum: float = 0.0
    latency_n: int = 0
    rating_sum: float = 0.0
    rating_n: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_cents: float = 0.0


class BackendStateRow(RouterTable, table=True):
    __tablename__ = "backend_state"

    backend: str = Field(primary_key=True)
    health: str = "unknown"
    unhealthy_reason: str | None = None
    enabled: bool | None = None  # None: as configured
    cooling_until: datetime | None = None
    changed_at: datetime | None = None


class SpendRow(RouterTable, table=True):
    __tablename__ = "spend"

    day: str = Field(primary_key=True)
    project: str = Field(primary_key=True)
    backend: str = Field(primary_key=True)
    cents: float = 0.0
    jobs: int = 0


class SelectionRow(RouterTable, table=True):
    __tablename__ = "selections"

    event_id: str = Field(primary_key=True)
    job_id: str = Field(index=True)
    thread_id: str
    attempt: int
    backend: str
    model: str
    strategy: str
    criteria: str
    reason: str
    job_type: str
    estimated_cost_cents: float
    candidates_json: str
    failover_from: str | None = None
    selected_at: datetime = Field(index=True)


class ThreadDraftRow(RouterTable, table=True):
    __tablename__ = "thread_drafts"

    thread_id: str = Field(primary_key=True)
    draft_number: int = Field(primary_key=True)
    backend: str


class ThreadRatingRow(RouterTable, table=True):
    __tablename__ = "thread_ratings"

    thread_id: str = Field(primary_key=True)
    backend: str
    rating: int


class BudgetAlertRow(RouterTable, table=True):
    __tablename__ = "budget_alerts"

    aggregate_id: str = Field(primary_key=True)
    spent_cents: float
    budget_cents: float
    reached_at: datetime


class ProjectionPosition(RouterTable, table=True):
    __tablename__ = "projection_position"

    name: str = Field(primary_key=True)
    last_sequence: int = 0


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created (SQLite in WAL mode, see :mod:`hermes_proto.sqlstore`)."""
    return sqlstore.make_engine(url, RouterTable.metadata)


Job = rows(RouterJobRow)
Stat = rows(BackendStatRow)
State = rows(BackendStateRow)
Spend = rows(SpendRow)
Selection = rows(SelectionRow)
Draft = rows(ThreadDraftRow)
Rating = rows(ThreadRatingRow)
Alert = rows(BudgetAlertRow)
Position = rows(ProjectionPosition)
ROWS = (Job, Stat, State, Spend, Selection, Draft, Rating, Alert, Position)
VIEW_ROWS = (Job, Stat, State, Spend, Alert)
"""The tables the dispatcher's in-memory view follows (:attr:`hermes_proto.rowstore.RowStore.changes`)."""


def row_store(engine: Engine) -> RowStore:
    """The store the projection writes through; changes to :data:`VIEW_ROWS` are reported after each commit."""
    return RowStore(engine, ROWS, tracked=VIEW_ROWS)


def load_position(store: RowStore) -> int:
    """The last stream sequence applied (0: nothing yet); call inside a batch."""
    return rowstore.load_position(store, Position, PROJECTION)


def save_position(store: RowStore, sequence: int) -> None:
    rowstore.save_position(store, Position, PROJECTION, sequence)


def apply_events(
    store: RowStore,
    events: Iterable[tuple[int, Event]],
    position: int | None = None,
    traces: dict[int, dict[str, str]] | None = None,
) -> None:
    """Apply ``(sequence, event)`` pairs in order, keep the trace context of each ``JobQueued`` whose sequence is in
    ``traces``, and save ``position`` (when given): one batch, one transaction."""
    with store:
        for seq, event in events:
            apply(event, store, seq)
            if traces and isinstance(event, ev.JobQueued) and seq in traces:
                remember_trace(store, event.job_id, traces[seq])
        if position is not None:
            save_position(store, position)


def utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive timestamp is taken as UTC (never as the host's zone: replays must not depend on
    where they run)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def aware(ts: datetime | None) -> datetime | None:
    """A stored timestamp as UTC-aware (SQLite hands them back naive; they were written in UTC)."""
    return None if ts is None else utc(ts)


def day_of(ts: datetime) -> str:
    """The UTC day (``YYYY-MM-DD``) budgets count in."""
    return utc(ts).date().isoformat()


def _stats(store: RowStore, backend: str):  # noqa: ANN202
    row = store.get(Stat, backend)
    if row is None:
        row = Stat(backend=backend)
        store.add(row)
    return row


def _state(store: RowStore, backend: str):  # noqa: ANN202
    row = store.get(State, backend)
    if row is None:
        row = State(backend=backend)
        store.add(row)
    return row


@singledispatch
def apply(event: Event, store: RowStore, sequence: int = 0) -> None:
    """Apply one event (``sequence``: its stream sequence) to the rows; other events are ignored."""


@apply.register
def _(e: ev.JobQueued, store: RowStore, sequence: int = 0) -> None:
    if store.get(Job, e.job_id) is not None:
        return
    store.add(
        Job(
            job_id=e.job_id,
            thread_id=e.aggregate_id,
            kind=e.kind,
            priority=e.priority,
            job_type=e.job_type,
            private=e.private,
            project=e.project,
            requested_backend=e.backend,
            requested_model=e.model,
            requires_json=json.dumps(e.requires),
            criteria=e.criteria,
            messages_json=msgspec.json.encode(e.messages).decode(),
            tools_json=msgspec.json.encode(e.tools).decode(),
            tool_choice=e.tool_choice,
            max_tokens=e.max_tokens,
            temperature=e.temperature,
            max_retries=e.max_retries,
            correlation_id=e.correlation_id,
            cause_event_id=e.event_id,
            queued_seq=sequence,
            queued_at=utc(e.occurred_at),
        )
    )


TRACE_HEADERS = ("traceparent", "tracestate")


def remember_trace(store: RowStore, job_id: str, headers: dict[str, str] | None) -> None:
    """Keep the W3C trace context of a job's ``JobQueued`` message (the first one seen) on its row."""
    context = {k: v for k, v in (headers or {}).items() if k in TRACE_HEADERS}
    row = store.get(Job, job_id)
    if context and row is not None and row.trace_headers_json == "{}":
        row.trace_headers_json = json.dumps(context)


@apply.register
def _(e: ev.BackendSelected, store: RowStore, sequence: int = 0) -> None:
    if store.get(Selection, e.event_id) is not None:
        return
    store.add(
        Selection(
            event_id=e.event_id,
            job_id=e.job_id,
            thread_id=e.aggregate_id,
            attempt=e.attempt,
            backend=e.backend,
            model=e.model,
            strategy=e.strategy,
            criteria=e.criteria,
            reason=e.reason,
            job_type=e.job_type,
            estimated_cost_cents=e.estimated_cost_cents,
            failover_from=e.failover_from,
            candidates_json=msgspec.json.encode(e.candidates).decode(),
            selected_at=utc(e.occurred_at),
        )
    )
    job = store.get(Job, e.job_id)
    if job is None:  # a job the router did not queue (e.g. a backend comparison): track it from here
        job = Job(
            job_id=e.job_id,
            thread_id=e.aggregate_id,
            kind=e.strategy,
            project=e.project,
            private=e.private,
            correlation_id=e.correlation_id,
            cause_event_id=e.event_id,
            queued_seq=sequence,
            queued_at=utc(e.occurred_at),
        )
        store.add(job)
    if job.status in (DONE, ABANDONED) or e.attempt < job.attempts:
        return
    # A round that read the job before its cancellation may still place it: the job stays cancelled, but the
    # row learns where the request went, so the router can tell that backend's edges to drop it.
    job.status = CANCELLED if job.status == CANCELLED else DISPATCHED
    job.attempts, job.backend, job.model = e.attempt, e.backend, e.model
    job.selected_at, job.selection_event_id = utc(e.occurred_at), e.event_id
    job.estimated_cost_cents, job.price_in, job.price_out = (
        e.estimated_cost_cents,
        e.price_in_cents_per_mtok,
        e.price_out_cents_per_mtok,
    )
    job.job_type, job.deferred_reason = e.job_type, None


@apply.register
def _(e: ev.ExecutionStarted, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    if job is not None and job.status == DISPATCHED and job.backend == e.backend:
        job.status = RUNNING


@apply.register
def _(e: ev.ExecutionCompleted, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    cancelled_but_ran = (
        job is not None and job.status == CANCELLED and job.backend == e.backend and job.completion_event_id is None
    )
    if job is None or (job.status not in (DISPATCHED, RUNNING) and not cancelled_but_ran):
        return
    # A call its edge did not stop in time still cost money: its tokens are recorded (and costed) either way.
    job.status = CANCELLED if cancelled_but_ran else DONE
    job.finished_at, job.completion_event_id = utc(e.occurred_at), e.event_id
    job.prompt_tokens, job.completion_tokens = e.prompt_tokens, e.completion_tokens
    stats = _stats(store, e.backend)
    stats.calls += 1
    stats.successes += 1
    stats.latency_ms_sum += e.latency_ms
    stats.latency_n += 1
    stats.prompt_tokens += e.prompt_tokens
    stats.completion_tokens += e.completion_tokens


@apply.register
def _(e: ev.ExecutionFailed, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    if job is None or job.status not in (DISPATCHED, RUNNING):
        return
    failed = json.loads(job.failed_backends_json)
    if e.backend not in failed:
        failed.append(e.backend)
    job.status, job.failed_backends_json = FAILED, json.dumps(failed)
    job.last_error_code, job.last_error_message, job.last_retryable = e.error_code, e.message, e.retryable
    job.last_failed_at, job.retry_after_s = utc(e.occurred_at), e.retry_after_s
    stats = _stats(store, e.backend)
    stats.calls += 1
    stats.failures += 1
    if e.retry_after_s:
        state = _state(store, e.backend)
        state.cooling_until = utc(e.occurred_at) + timedelta(seconds=e.retry_after_s)


@apply.register
def _(e: ev.ExecutionAbandoned, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    if job is not None and job.status in OPEN:
        job.status, job.finished_at = ABANDONED, utc(e.occurred_at)
        job.last_error_code, job.last_error_message = e.error_code, e.message


@apply.register
def _(e: ev.JobCancelled, store: RowStore, sequence: int = 0) -> None:
    """A cancelled job is never placed again; the backend of its last attempt (if any) stays on the row so the
    router can tell that backend's edges to stop the call."""
    job = store.get(Job, e.job_id)
    if job is not None and job.status in OPEN:
        job.status, job.finished_at = CANCELLED, utc(e.occurred_at)
        job.last_error_code, job.last_error_message = "cancelled", e.reason


@apply.register
def _(e: ev.JobDeferred, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    if job is not None and job.status in OPEN:
        job.deferred_reason = e.reason


@apply.register
def _(e: ev.CostRecorded, store: RowStore, sequence: int = 0) -> None:
    job = store.get(Job, e.job_id)
    if job is not None:
        if job.cost_recorded:
            return
        job.cost_recorded, job.cost_cents = True, e.cost_cents
    key = (day_of(e.occurred_at), e.project, e.backend)
    spend = store.get(Spend, *key)
    if spend is None:
        spend = Spend(day=key[0], project=key[1], backend=key[2])
        store.add(spend)
    spend.cents += e.cost_cents
    spend.jobs += 1
    stats = _stats(store, e.backend)
    stats.cost_cents += e.cost_cents


@apply.register
def _(e: ev.DraftPresented, store: RowStore, sequence: int = 0) -> None:
    if store.get(Draft, e.aggregate_id, e.draft_number) is None:
        store.add(Draft(thread_id=e.aggregate_id, draft_number=e.draft_number, backend=e.backend))


@apply.register
def _(e: ev.ThreadRated, store: RowStore, sequence: int = 0) -> None:
    draft = store.get(Draft, e.aggregate_id, e.draft_number)
    if draft is None:
        return
    previous = store.get(Rating, e.aggregate_id)
    if previous is not None:
        old = _stats(store, previous.backend)
        old.rating_sum -= previous.rating
        old.rating_n -= 1
    stats = _stats(store, draft.backend)
    stats.rating_sum += e.rating
    stats.rating_n += 1
    if previous is None:
        store.add(Rating(thread_id=e.aggregate_id, backend=draft.backend, rating=e.rating))
    else:
        previous.backend, previous.rating = draft.backend, e.rating


@apply.register
def _(e: ev.BackendMarkedUnhealthy, store: RowStore, sequence: int = 0) -> None:
    state = _state(store, e.aggregate_id)
    state.health, state.unhealthy_reason, state.changed_at = "unhealthy", e.reason, utc(e.occurred_at)


@apply.register
def _(e: ev.BackendRecovered, store: RowStore, sequence: int = 0) -> None:
    state = _state(store, e.aggregate_id)
    state.health, state.unhealthy_reason, state.changed_at = "healthy", None, utc(e.occurred_at)


@apply.register
def _(e: ev.BackendEnabled, store: RowStore, sequence: int = 0) -> None:
    state = _state(store, e.aggregate_id)
    state.enabled, state.changed_at = True, utc(e.occurred_at)


@apply.register
def _(e: ev.BackendDisabled, store: RowStore, sequence: int = 0) -> None:
    state = _state(store, e.aggregate_id)
    state.enabled, state.changed_at = False, utc(e.occurred_at)


@apply.register
def _(e: ev.BudgetThresholdReached, store: RowStore, sequence: int = 0) -> None:
    if store.get(Alert, e.aggregate_id) is None:
        store.add(
            Alert(
                aggregate_id=e.aggregate_id,
                spent_cents=e.spent_cents,
                budget_cents=e.budget_cents,
                reached_at=utc(e.occurred_at),
            )
        )


@apply.register
def _(e: PersonalDataForgotten, store: RowStore, sequence: int = 0) -> None:
    from hermes_router.forgetting import forget_rows  # (it reads this module's tables)

    forget_rows(store, e)

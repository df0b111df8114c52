"""The tool service's handlers: a dispatched call is recorded in the ledger, started, run in the background (at most
``max_concurrent`` at once) and its outcome appended; a run that ends (cancelled, failed) stops its running calls; a
forgotten run (``PersonalDataForgotten``) too, and its calls leave the ledger (:mod:`hermes_tools.forgetting`); a
restart reports the calls it left unfinished (:class:`~hermes_tools.ledger.CallLedger`).

Events: ``ToolCallStarted``, ``ToolCallCompleted``, ``ToolCallFailed``, ids derived from the call id, so appending an
outcome again (a redelivery, a restart) is dropped by JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

import msgspec
import structlog
from opentelemetry import trace
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from hermes_proto import agents as ag
from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.codec import decode_event, encode
from hermes_proto.forgetting import PersonalDataForgotten, forgotten_aggregates
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.rpc import BUS_ERRORS
from hermes_proto.telemetry import extract_context

from hermes_tools.executor import Executor, Outcome
from hermes_tools.forgetting import forget_calls
from hermes_tools.ledger import CallLedger
from hermes_tools.metrics import SANDBOX_REFUSALS, TOOL_CALL_SECONDS, TOOL_CALLS, TOOLS_RUNNING

log = structlog.get_logger("hermes.tools")
_tracer = trace.get_tracer("hermes.tools")
RUN_ENDS = (ag.AgentRunCancelled, ag.AgentRunFailed, ag.AgentRunCompleted)
SANDBOX_CODES = ("path_outside_workspace", "sandbox_unavailable", "timeout", "workspace_changed")


def _envelope(call_id: str, name: str, d: ag.ToolCallDispatched) -> dict[str, Any]:
    return dict(
        event_id=derived_id(call_id, name),
        aggregate_id=d.aggregate_id,
        occurred_at=utcnow(),
        correlation_id=d.correlation_id,
        causation_id=d.event_id,
    )


def outcome_event(d: ag.ToolCallDispatched, outcome: Outcome) -> Event:
    """The event recording ``outcome`` of dispatch ``d``."""
    if outcome.error_code is None:
        return ag.ToolCallCompleted(
            **_envelope(d.call_id, "tool_call_completed", d),
            call_id=d.call_id,
            name=d.name,
            output=outcome.output,
            is_error=outcome.is_error,
            truncated=outcome.truncated,
            full_output_path=outcome.full_output_path,
            duration_ms=outcome.duration_ms,
            exit_code=outcome.exit_code,
        )
    return ag.ToolCallFailed(
        **_envelope(d.call_id, "tool_call_failed", d),
        call_id=d.call_id,
        name=d.name,
        error_code=outcome.error_code,
        message=outcome.output,
        duration_ms=outcome.duration_ms,
    )


class ToolService:
    """Executes dispatched calls. ``append`` is retried (exponential backoff, up to ``append_within_s`` seconds)
    while NATS is away; ``running`` holds each run's call tasks (to stop them when the run ends); ``forgotten``: the
    runs forgotten since the start (a dispatch of one is dropped)."""

    def __init__(
        self,
        store: EventStore,
        ledger: CallLedger,
        executor: Executor,
        max_concurrent: int = 4,
        append_within_s: float = 120.0,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.executor = executor
        self.append_within_s = append_within_s
        self._slots = asyncio.Semaphore(max_concurrent)
        self.running: dict[str, dict[str, asyncio.Task[None]]] = defaultdict(dict)
        self.ended: set[str] = set()
        self.forgotten: set[str] = set()
        self.stopping = False

    async def append(self, events: list[Event]) -> None:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(BUS_ERRORS),
            wait=wait_exponential(multiplier=0.2, max=5.0),
            stop=stop_after_delay(self.append_within_s),
            reraise=True,
        ):
            with attempt:
                await self.store.append(events)

    async def on_event(self, delivery: Delivery[Event]) -> None:
        """The consumer's handler: a dispatch starts a call; the end of a run stops its calls; a forget deletes
        them."""
        event = delivery.message
        if isinstance(event, ag.ToolCallDispatched):
            await self.dispatched(event, delivery.msg.headers)
        elif isinstance(event, RUN_ENDS):
            self._end(event.aggregate_id)
        elif isinstance(event, PersonalDataForgotten):
            await self.forget(event)

    def _end(self, run_id: str) -> None:
        self.ended.add(run_id)
        for call_id, task in list(self.running.get(run_id, {}).items()):
            log.info("tool_call_stopping", run_id=run_id, call_id=call_id)
            task.cancel()

    async def forget(self, event: PersonalDataForgotten) -> None:
        """Stop the calls of the runs ``event`` names, drop their later dispatches, and delete their calls (and the
        user's) from the ledger with their spilled outputs. Raises ``sqlite3.Error`` (the event is redelivered)."""
        runs = forgotten_aggregates(event).get("thread", set())
        self.forgotten |= runs
        for run_id in runs:
            self._end(run_id)
        calls, files = await asyncio.to_thread(forget_calls, self.ledger, self.executor.home, runs, event.user_id)
        log.info("tool_calls_forgotten", runs=len(runs), calls=calls, spilled_outputs=files, reason=event.reason)

    async def dispatched(self, d: ag.ToolCallDispatched, headers: dict[str, str] | None = None) -> None:
        if d.aggregate_id in self.forgotten:
            return
        known = await asyncio.to_thread(self.ledger.get, d.call_id)
        if known is not None:
            state, outcome = known
            if state == "done" and outcome:  # appended before, maybe lost: append the same event again
                await self.append([decode_event(outcome.encode())])
            return  # "started": the restart recovery decides (interrupted, or run again when read-only)
        if not await asyncio.to_thread(self.ledger.start, d.call_id, d.aggregate_id, encode(d)):
            return
        if d.aggregate_id in self.forgotten:  # forgotten while the row was written: its deletion may have missed it
            await asyncio.to_thread(self.ledger.forget, [d.aggregate_id])
            return
        await self.append(
            [ag.ToolCallStarted(**_envelope(d.call_id, "tool_call_started", d), call_id=d.call_id, name=d.name)]
        )
        self._spawn(d, headers)

    def _spawn(self, d: ag.ToolCallDispatched, headers: dict[str, str] | None) -> None:
        task = asyncio.create_task(self._run(d, headers), name=f"tool-call-{d.call_id}")
        self.running[d.aggregate_id][d.call_id] = task
        task.add_done_callback(lambda _t: self.running.get(d.aggregate_id, {}).pop(d.call_id, None))

    async def _run(self, d: ag.ToolCallDispatched, headers: dict[str, str] | None) -> None:
        bound = structlog.contextvars.bound_contextvars(
            thread_id=d.aggregate_id, run_id=d.aggregate_id, call_id=d.call_id, correlation_id=d.correlation_id
        )
        with (
            bound,
            _tracer.start_as_current_span(
                f"tool {d.name}",
                context=extract_context(headers),
                attributes={"hermes.tool": d.name, "hermes.call_id": d.call_id},
            ) as span,
        ):
            started = time.perf_counter()
            try:
                async with self._slots:
                    TOOLS_RUNNING.inc()
                    try:
                        outcome = await self._execute(d)
                    finally:
                        TOOLS_RUNNING.dec()
            except asyncio.CancelledError:
                if self.stopping:  # left "started": the next start decides (interrupted, or run again)
                    raise
                if d.aggregate_id in self.forgotten:  # nothing more is recorded of a forgotten run
                    raise
                outcome = Outcome.failed("cancelled", "the run ended: the call was stopped", started)
            label = (
                "completed" if outcome.error_code is None and not outcome.is_error else outcome.error_code or "error"
            )
            TOOL_CALLS.labels(d.name, label).inc()
            TOOL_CALL_SECONDS.labels(d.name).observe(time.perf_counter() - started)
            if outcome.error_code in SANDBOX_CODES:
                SANDBOX_REFUSALS.labels(outcome.error_code).inc()
            if outcome.truncated:
                SANDBOX_REFUSALS.labels("output_truncated").inc()
            span.set_attribute("hermes.outcome", label)
            event = outcome_event(d, outcome)
            try:
                await self.append([event])
            except Exception as exc:  # left "started": the next start reports it interrupted
                log.error("tool_outcome_not_appended", error=repr(exc))
                return
            await asyncio.to_thread(self.ledger.done, d.call_id, encode(event))
            log.info("tool_call_ended", tool=d.name, outcome=label, duration_ms=round(outcome.duration_ms, 1))

    async def _execute(self, d: ag.ToolCallDispatched) -> Outcome:
        if d.aggregate_id in self.ended:
            return Outcome.failed("cancelled", "the run had already ended", time.perf_counter())
        return await self.executor.execute(d)

    async def recover(self) -> None:
        """After a start: calls left ``started`` by a crash. A read-only call runs again; any other may have had
        side effects, so it is reported ``interrupted`` (the model decides whether to ask again)."""
        for raw in await asyncio.to_thread(self.ledger.interrupted):
            try:
                d = msgspec.json.decode(raw, type=ag.ToolCallDispatched)
            except msgspec.DecodeError:
                continue
            if d.read_only:
                log.info("tool_call_rerun", call_id=d.call_id, tool=d.name)
                self._spawn(d, None)
                continue
            outcome = Outcome.failed(
                "interrupted",
                "the tool service stopped while this call ran; it was not run again because it may have changed "
                "something. Check its effects before asking for it again.",
                time.perf_counter(),
            )
            event = outcome_event(d, outcome)
            await self.append([event])
            await asyncio.to_thread(self.ledger.done, d.call_id, encode(event))
            TOOL_CALLS.labels(d.name, "interrupted").inc()

    async def stop(self) -> None:
        self.stopping = True
        tasks = [t for calls in self.running.values() for t in calls.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

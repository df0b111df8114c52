"""Handling one ``ExecutionRequested``: started event, streamed model call with token deltas, outcome event.

The edge never retries a model call: every model failure becomes an ``ExecutionFailed`` and the message
is acked; the router and orchestrator decide what happens next. Only a failure to append to the log
raises (the runner then naks and JetStream redelivers; derived event ids make that idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import msgspec
import structlog
from nats.aio.client import Client as NATS

from hermes_proto.base import Event
from hermes_proto.bus import Delivery
from hermes_proto.codec import UNDECODABLE, encode, unseal
from hermes_proto.execution import CancelExecution, ExecutionRequested, TokenDelta
from hermes_proto.ids import utcnow
from hermes_proto.keyring import ready as keyring_ready
from hermes_proto.subjects import EVENTS_STREAM, thread_event, token_subject
from hermes_proto.telemetry import bind_ids, clear_ids

from hermes_edge import domain
from hermes_edge.adapters.http_chat import TextSink
from hermes_edge.domain import ErrorCode, ModelCall, ModelCallFailed, ModelReply
from hermes_edge.metrics import (
    CANCELLED,
    FIRST_TOKEN_SECONDS,
    IN_FLIGHT,
    REDELIVERED_DONE,
    REQUEST_SECONDS,
    REQUESTS,
    TOKENS,
    USAGE_ESTIMATED,
)

log = structlog.get_logger("hermes.edge")


class _EventId(msgspec.Struct):
    event_id: str


class ChatModel(Protocol):
    """The port the handler needs from an adapter (see :class:`hermes_edge.adapters.HttpChatAdapter`)."""

    async def stream_chat(self, call: ModelCall, on_text: TextSink) -> ModelReply: ...


class EventAppender(Protocol):
    async def append(self, events: list[Event]) -> list[int]: ...


class TokenStream:
    """Publishes one job's ``TokenDelta``s on core NATS ``hermes.tokens.<thread>.<job>``: ``seq`` from 0,
    then a final empty delta with ``done=True``. Best effort: a live view must never fail the job, so
    publish errors are logged once and otherwise ignored. No flush per token."""

    def __init__(self, nc: NATS, thread_id: str, job_id: str) -> None:
        self._nc = nc
        self._subject = token_subject(thread_id, job_id)
        self._job_id = job_id
        self._seq = 0
        self._warned = False

    async def send(self, text: str) -> None:
        await self._publish(TokenDelta(job_id=self._job_id, seq=self._seq, text=text))

    async def finish(self) -> None:
        await self._publish(TokenDelta(job_id=self._job_id, seq=self._seq, text="", done=True))

    async def _publish(self, delta: TokenDelta) -> None:
        try:
            await self._nc.publish(self._subject, encode(delta))
        except Exception as exc:
            if not self._warned:
                log.warning("token_publish_failed", subject=self._subject, error=repr(exc))
                self._warned = True
        self._seq += 1


class ExecutionHandler:
    """The ``ConsumerSpec`` handler of ``hermes.exec.<backend>``.

    ``default_model`` is used when a request names no model; ``timeout_cap_s`` caps each request's
    ``timeout_s`` (seconds). ``in_flight`` counts running calls. While a call runs, the consumer runner
    (``hermes_proto.bus.ConsumerRunner``) sends ``in_progress()`` every third of the ack wait, as for every
    handler, so a long call is not redelivered. One log line per request: its outcome."""

    def __init__(
        self,
        *,
        backend: str,
        model: ChatModel,
        store: EventAppender,
        nc: NATS,
        default_model: str | None,
        timeout_cap_s: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.backend = backend
        self._model = model
        self._store = store
        self._nc = nc
        self._default_model = default_model
        self._timeout_cap_s = timeout_cap_s
        self._clock = clock
        self.in_flight = 0
        self._in_flight_gauge = IN_FLIGHT.labels(backend)
        self._calls: dict[str, asyncio.Task] = {}
        """Running model calls by job id (what a cancellation stops)."""
        self._cancelled: OrderedDict[str, str] = OrderedDict()
        """Recently cancelled job ids (the last :data:`REMEMBERED_CANCELLATIONS`) and why: a request for one
        that arrives later is dropped without calling the model."""

    REMEMBERED_CANCELLATIONS = 10_000

    def cancel(self, order: CancelExecution) -> bool:
        """Stop ``order.job_id``'s model call if this edge runs it (the HTTP request is closed, so the model
        server stops generating) and remember the job so a later delivery of it is dropped. Returns whether a
        running call was stopped."""
        self._cancelled[order.job_id] = order.reason
        self._cancelled.move_to_end(order.job_id)
        while len(self._cancelled) > self.REMEMBERED_CANCELLATIONS:
            self._cancelled.popitem(last=False)
        call = self._calls.get(order.job_id)
        if call is None or call.done():
            return False
        call.cancel()
        return True

    async def __call__(self, delivery: Delivery[ExecutionRequested]) -> None:
        request = delivery.message
        bind_ids(thread_id=request.thread_id, job_id=request.job_id, correlation_id=request.correlation_id)
        try:
            await self._execute(request, delivery)
        finally:
            clear_ids("thread_id", "job_id", "correlation_id")

    async def _execute(self, request: ExecutionRequested, delivery: Delivery[ExecutionRequested]) -> None:
        call = domain.model_call(request, self._default_model, self._timeout_cap_s)
        if request.backend != self.backend:
            log.warning("backend_mismatch", requested=request.backend, serving=self.backend)
        if delivery.deliveries > 1 and await self._outcome_recorded(request):
            # An earlier delivery ran and recorded its outcome, but its ack was lost (edge or NATS killed just
            # after): calling the model again would only be billed twice.
            REDELIVERED_DONE.labels(self.backend).inc()
            log.info("execution_already_recorded", request_id=request.request_id, attempt=delivery.deliveries)
            return
        if request.job_id in self._cancelled:  # cancelled before it got here: never call the model
            await self._record_failure(
                request,
                ModelCallFailed(
                    ErrorCode.CANCELLED,
                    f"job cancelled ({self._cancelled[request.job_id]}) before the call started",
                    retryable=False,
                ),
            )
            CANCELLED.labels(self.backend, "before_start").inc()
            log.info("execution_dropped_cancelled", request_id=request.request_id)
            return
        await self._store.append(
            [domain.started_event(request, self.backend, call.model, delivery.deliveries, self._clock())]
        )
        tokens = TokenStream(self._nc, request.thread_id, request.job_id)
        outcome = await self._run_model(call, tokens, delivery)
        await tokens.finish()
        if isinstance(outcome, ModelReply):
            event: Event = domain.completed_event(request, self.backend, call.model, outcome, self._clock())
        else:
            event = domain.failed_event(request, self.backend, call.model, outcome, self._clock())
        await self._store.append([event])
        self._observe(call, outcome, request_id=request.request_id, attempt=delivery.deliveries)

    async def _run_model(
        self, call: ModelCall, tokens: TokenStream, delivery: Delivery[ExecutionRequested]
    ) -> ModelReply | ModelCallFailed:
        if not call.model:
            return ModelCallFailed(
                ErrorCode.BAD_REQUEST,
                "the request names no model and the backend has no default (set BACKEND_<NAME>_MODELS)",
                retryable=False,
            )
        self.in_flight += 1
        self._in_flight_gauge.inc()
        job_id = delivery.message.job_id
        running = self._calls[job_id] = asyncio.create_task(self._model.stream_chat(call, tokens.send))
        started = time.perf_counter()
        if job_id in self._cancelled:  # cancelled while ExecutionStarted was being appended
            running.cancel()
        try:
            return await running
        except ModelCallFailed as exc:
            return exc
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if running.cancelled() and job_id in self._cancelled and not (current and current.cancelling()):
                CANCELLED.labels(self.backend, "running").inc()
                return ModelCallFailed(
                    ErrorCode.CANCELLED,
                    f"job cancelled ({self._cancelled[job_id]}); the model call was stopped",
                    retryable=False,
                    latency_ms=(time.perf_counter() - started) * 1000,
                )
            # Shutting down mid-call: hand the request back at once rather than after the ack wait.
            running.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(delivery.msg.nak()), timeout=1.0)
            raise
        finally:
            self._calls.pop(job_id, None)
            self.in_flight -= 1
            self._in_flight_gauge.dec()

    async def _record_failure(self, request: ExecutionRequested, failure: ModelCallFailed) -> None:
        """Append ``ExecutionFailed`` for a request that gets no model call (cancelled first, or given up)."""
        model = domain.model_call(request, self._default_model, self._timeout_cap_s).model
        await self._store.append([domain.failed_event(request, self.backend, model, failure, self._clock())])

    async def _outcome_recorded(self, request: ExecutionRequested) -> bool:
        """Whether the log already holds this request's outcome (its derived id), judged from the thread's last
        ``ExecutionCompleted`` / ``ExecutionFailed``; a lookup error counts as no (the call then runs)."""
        js = self._nc.jetstream()
        wanted = domain.outcome_event_id(request.request_id)
        for kind in ("execution_completed", "execution_failed"):
            try:
                msg = await js.get_last_msg(EVENTS_STREAM, thread_event(request.thread_id, kind))
                await keyring_ready((msg.data,))
                if msgspec.json.decode(unseal(msg.data), type=_EventId).event_id == wanted:
                    return True
            except Exception:  # not found, or NATS busy: run the call rather than drop it
                continue
        return False

    async def give_up(self, request: ExecutionRequested, reason: str, detail: str) -> None:
        """The runner dead-letters ``request`` (delivered too often without an outcome: edges killed during the
        call, or the outcome could not be appended): record ``ExecutionFailed(error_code="max_deliveries")``,
        retryable, so the router retries or abandons the job instead of waiting for it forever."""
        await self._record_failure(
            request,
            ModelCallFailed(ErrorCode.GAVE_UP, f"the request was dead-lettered ({reason}: {detail})", retryable=True),
        )
        log.warning("execution_given_up", job_id=request.job_id, thread_id=request.thread_id, reason=reason)

    async def on_cancel(self, msg) -> None:  # noqa: ANN001 - a nats-py core message
        """Core NATS ``hermes.cancel.<backend>`` callback; an undecodable order is logged and dropped."""
        try:
            order = msgspec.json.decode(msg.data, type=CancelExecution)
        except UNDECODABLE as exc:
            log.warning("cancel_order_invalid", error=str(exc))
            return
        stopped = self.cancel(order)
        log.info(
            "cancel_order",
            job_id=order.job_id,
            thread_id=order.thread_id,
            reason=order.reason,
            stopped_running_call=stopped,
        )

    def _observe(
        self, call: ModelCall, outcome: ModelReply | ModelCallFailed, *, request_id: str, attempt: int
    ) -> None:
        """Metrics and the request's one log line (``execution_completed`` or ``execution_failed``; the thread,
        job and correlation ids are bound by :meth:`__call__`)."""
        labels = (self.backend, call.model)
        ids = {"model": call.model, "request_id": request_id, "attempt": attempt, "output_limit": call.max_tokens}
        if isinstance(outcome, ModelCallFailed):
            REQUESTS.labels(*labels, str(outcome.code)).inc()
            REQUEST_SECONDS.labels(*labels).observe(outcome.latency_ms / 1000)
            log.warning(
                "execution_failed",
                **ids,
                error_code=str(outcome.code),
                retryable=outcome.retryable,
                retry_after_s=outcome.retry_after_s,
                message=outcome.message[:300],
                latency_ms=round(outcome.latency_ms, 1),
            )
            return
        REQUESTS.labels(*labels, "completed").inc()
        REQUEST_SECONDS.labels(*labels).observe(outcome.latency_ms / 1000)
        if outcome.first_token_ms is not None:
            FIRST_TOKEN_SECONDS.labels(*labels).observe(outcome.first_token_ms / 1000)
        TOKENS.labels(*labels, "prompt").inc(outcome.prompt_tokens)
        TOKENS.labels(*labels, "completion").inc(outcome.completion_tokens)
        if outcome.usage_estimated:
            USAGE_ESTIMATED.labels(*labels).inc()
        log.info(
            "execution_completed",
            **ids,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            usage_estimated=outcome.usage_estimated,
            latency_ms=round(outcome.latency_ms, 1),
            # 'token' in a log key is redacted by hermes_proto.telemetry unless it is a count
            ttft_ms=None if outcome.first_token_ms is None else round(outcome.first_token_ms, 1),
            finish_reason=outcome.finish_reason,
            tool_calls=len(outcome.tool_calls),
        )

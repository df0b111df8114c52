"""Admission control at the HTTP edge: the queue cap (``HERMES_MAX_QUEUED_JOBS``), reserved so that concurrent
submissions to this gateway process cannot pass it.

A submission takes a reservation for its jobs under one lock: the jobs the orchestrator counts (open jobs plus
waiting workflow steps, :func:`hermes_proto.admission.queue_depth`) plus those still reserved plus the new ones must
fit under the cap. The reservation is bound to the command's ``HERMES_COMMANDS`` sequence once JetStream stored it,
and released when the submission fails before that, or once the command has left the stream: ``HERMES_COMMANDS`` is
a work queue, and the orchestrator acknowledges a command only after its decision's events are in the in-memory
state that answers the queue query, so from then on the count holds its jobs. A reservation never bound (a request
that died between admission and publishing without unwinding) is dropped after :data:`UNBOUND_TTL_S`.

Refusals: 429 ``queue_full`` (``Retry-After``: ``HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS``, and the minute's
``QueueFull`` event for the notifier's alert), or 503 ``queue_unknown`` (``Retry-After``:
:data:`UNKNOWN_RETRY_AFTER_S`) when the orchestrator does not answer the count: work is refused rather than
admitted blind. After an unanswered count, submissions are refused without asking for :data:`UNKNOWN_HOLD_S`,
so a burst does not queue up behind the lock for the query's timeout each. The limit is per gateway process:
several gateways, or the notifier's Telegram ideas, each reserve only their own submissions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from fastapi import Request
from nats.js.errors import NotFoundError

from hermes_proto import subjects as subj
from hermes_proto.admission import UNKNOWN_DEPTH, QueueCap, queue_depth, record_queue_full
from hermes_proto.rpc import BUS_ERRORS

from hermes_gateway.adapters import Bus
from hermes_gateway.envelope import ApiError
from hermes_gateway.observability import QUEUE_RESERVED_JOBS, SUBMISSIONS_REFUSED

log = structlog.get_logger("hermes.gateway")

UNBOUND_TTL_S = 30.0
UNKNOWN_RETRY_AFTER_S = 5
UNKNOWN_HOLD_S = 1.0
SETTLE_TRIES, SETTLE_WAIT_S = 5, 0.05
"""A refusal that reserved jobs may explain is checked again up to this many times, this many seconds apart."""


@dataclass(eq=False)
class Hold:
    """One submission's reservation: ``jobs`` counted against the cap since ``taken_s`` (monotonic seconds);
    ``seq`` its command's ``HERMES_COMMANDS`` sequence once published (None before)."""

    jobs: int
    taken_s: float
    seq: int | None = None

    def bind(self, seq: int) -> None:
        """The command is stored as ``HERMES_COMMANDS`` sequence ``seq``: held until the orchestrator takes it."""
        self.seq = seq


class QueueUnknown(Exception):
    """The orchestrator did not answer the queue count."""


class QueueReservations:
    """The reservations of one gateway process against ``cap``. :meth:`reserve` admits or refuses, :meth:`release`
    gives back a submission that was not published."""

    def __init__(self, bus: Bus, cap: QueueCap, timer: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self.cap = cap
        self._timer = timer
        self._lock = asyncio.Lock()
        self._holds: list[Hold] = []
        self._unknown_until = float("-inf")

    @property
    def held(self) -> int:
        """Jobs reserved by submissions the orchestrator has not taken yet."""
        return sum(h.jobs for h in self._holds)

    async def reserve(self, new_jobs: int) -> Hold | int:
        """A :class:`Hold` for ``new_jobs`` when they fit, else the count that refused them (open and reserved
        jobs). Raises :class:`QueueUnknown` when the orchestrator does not answer."""
        async with self._lock:
            now = self._timer()
            if now < self._unknown_until:
                raise QueueUnknown("the orchestrator did not answer the last queue count")
            for attempt in range(SETTLE_TRIES):
                await self._settle(self._timer())
                try:
                    queued = await queue_depth(self._bus.nc)
                except UNKNOWN_DEPTH as exc:
                    self._unknown_until = self._timer() + UNKNOWN_HOLD_S
                    raise QueueUnknown(str(exc)) from exc
                counted = queued + self.held
                if counted + new_jobs <= (self.cap.limit or 0):
                    break
                if not self.held or attempt == SETTLE_TRIES - 1:
                    return counted
                # A command the orchestrator has already counted stays in HERMES_COMMANDS until its ack lands, so
                # its job can be counted twice for a moment: look again before refusing.
                await asyncio.sleep(SETTLE_WAIT_S)
            hold = Hold(new_jobs, now)
            self._holds.append(hold)
            QUEUE_RESERVED_JOBS.set(self.held)
            return hold

    def release(self, hold: Hold) -> None:
        """Give back ``hold`` (its command was not published); idempotent."""
        if hold in self._holds:
            self._holds.remove(hold)
            QUEUE_RESERVED_JOBS.set(self.held)

    async def _settle(self, now: float) -> None:
        """Drop the holds whose commands have left ``HERMES_COMMANDS`` (taken, so counted by the orchestrator from
        now on) and the unbound ones older than :data:`UNBOUND_TTL_S`. A stream that cannot be read keeps them."""
        stale = [h for h in self._holds if h.seq is None and now - h.taken_s > UNBOUND_TTL_S]
        if stale:
            log.warning("queue_reservations_expired", holds=len(stale))
        bound = [(h, h.seq) for h in self._holds if h.seq is not None]
        taken = await asyncio.gather(*(self._taken(seq) for _, seq in bound))
        drop = {id(h) for h in stale} | {id(h) for (h, _), gone in zip(bound, taken, strict=True) if gone}
        self._holds = [h for h in self._holds if id(h) not in drop]
        QUEUE_RESERVED_JOBS.set(self.held)

    async def _taken(self, seq: int) -> bool:
        try:
            await self._bus.js.get_msg(subj.COMMANDS_STREAM, seq)
        except NotFoundError:
            return True
        except BUS_ERRORS as exc:
            log.warning("queue_reservation_unchecked", seq=seq, error=repr(exc))
        return False


@asynccontextmanager
async def admitted(request: Request, new_jobs: int = 1) -> AsyncIterator[Hold]:
    """Reserve ``new_jobs`` under the cap for the block, which publishes the submission and binds the hold to the
    command's sequence (:meth:`Hold.bind`); an error in the block, or a block that binds nothing, gives it back.
    Raises :class:`ApiError` 429 ``queue_full`` or 503 ``queue_unknown`` before the block runs. No cap, or no new
    jobs (an answer to a thread's questions): the block runs with a hold that counts nothing."""
    reservations: QueueReservations = request.app.state.admission
    cap = reservations.cap
    if not cap.limit or new_jobs <= 0:
        yield Hold(new_jobs, 0.0)
        return
    try:
        outcome = await reservations.reserve(new_jobs)
    except QueueUnknown as exc:
        SUBMISSIONS_REFUSED.labels("queue_unknown").inc()
        log.warning("queue_unknown_refused", error=str(exc))
        raise ApiError(
            503,
            "queue_unknown",
            "The orchestrator did not say how full the job queue is, so nothing more is accepted now.",
            retry_after=UNKNOWN_RETRY_AFTER_S,
            user_action=f"Retry in {UNKNOWN_RETRY_AFTER_S} s; if it lasts, check that the orchestrator runs.",
        ) from None
    if not isinstance(outcome, Hold):
        SUBMISSIONS_REFUSED.labels("queue_full").inc()
        log.warning("queue_full", queued=outcome, limit=cap.limit, new_jobs=new_jobs)
        refusal = await record_queue_full(request.app.state.bus.store, cap, outcome, request.state.request_id)
        raise ApiError(
            429,
            "queue_full",
            f"The job queue is full ({refusal.queued} open jobs, limit {refusal.limit}).",
            details={"queued": refusal.queued, "limit": refusal.limit, "retry_after": refusal.retry_after_s},
            retry_after=refusal.retry_after_s,
            user_action=f"Retry in {refusal.retry_after_s} s, or raise HERMES_MAX_QUEUED_JOBS.",
        )
    try:
        yield outcome
    finally:
        if outcome.seq is None:
            reservations.release(outcome)

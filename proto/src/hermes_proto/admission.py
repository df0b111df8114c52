"""Admission control shared by every channel that submits work: the queue cap (``HERMES_MAX_QUEUED_JOBS``,
seed ``hermes.web.max_queued_jobs``).

Before a submission is published, the channel asks the orchestrator how many jobs are open (queued, dispatched,
running, retrying) plus workflow steps waiting for their dependencies (:func:`queue_depth`). At or beyond the cap
the submission is refused and a ``QueueFull`` event is appended (:func:`record_queue_full`; at most one per minute:
its id is derived from the minute) for the notifier's ``queue_full`` alert.

:func:`check_queue` (the notifier's Telegram ideas) reads the count without reserving: concurrent submissions can
pass the cap by the number in flight at once, and when the orchestrator does not answer within
``QUEUE_QUERY_TIMEOUT_S`` the submission is admitted. The gateway reserves instead
(:mod:`hermes_gateway.admission`): it cannot overshoot, and refuses when the count is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from nats.aio.client import Client as NATS

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.events import QueueFull
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.queries import QueueReply
from hermes_proto.rpc import BUS_ERRORS, BadReply, BusUnavailable, Empty, Refused, ask

log = structlog.get_logger("hermes.admission")

QUEUE_QUERY_TIMEOUT_S = 0.5
UNKNOWN_DEPTH = (BusUnavailable, BadReply, Refused)
"""What :func:`queue_depth` raises when the orchestrator gives no usable answer."""


@dataclass(frozen=True)
class QueueCap:
    """``limit`` open jobs at most (None or 0: no cap); ``retry_after_s`` what a refused caller is told (s)."""

    limit: int | None
    retry_after_s: int = 30


@dataclass(frozen=True)
class Refusal:
    """Why a submission was refused: ``queued`` open jobs against ``limit``; retry after ``retry_after_s``."""

    queued: int
    limit: int
    retry_after_s: int


async def queue_depth(nc: NATS, timeout_s: float = QUEUE_QUERY_TIMEOUT_S) -> int:
    """The orchestrator's open jobs plus waiting workflow steps (``hermes.query.queue``), asked with ``timeout_s``
    seconds to answer. Raises one of :data:`UNKNOWN_DEPTH`."""
    depth = await ask(nc, "The orchestrator", subjects.QUERY_QUEUE, Empty(), QueueReply, timeout_s)
    return depth.open_jobs + depth.waiting_steps


async def record_queue_full(store: EventStore, cap: QueueCap, queued: int, correlation_id: str) -> Refusal:
    """The :class:`Refusal` of a submission over ``cap`` (``queued``: what counted against it), after appending the
    minute's ``QueueFull`` (a failed append is logged: the refusal stands without its alert)."""
    assert cap.limit, "a refusal needs a cap"
    now = utcnow()
    event = QueueFull(
        event_id=derived_id("queue_full", now.strftime("%Y-%m-%dT%H:%M")),
        aggregate_id="queue",
        occurred_at=now,
        correlation_id=correlation_id,
        queued=queued,
        limit=cap.limit,
        retry_after_s=float(cap.retry_after_s),
    )
    try:
        await store.append([event])
    except BUS_ERRORS as exc:
        log.warning("queue_full_event_failed", error=repr(exc))
    return Refusal(queued, cap.limit, cap.retry_after_s)


async def check_queue(
    nc: NATS, store: EventStore, cap: QueueCap, correlation_id: str, new_jobs: int = 1
) -> Refusal | None:
    """None when ``new_jobs`` more fit under the cap (or there is no cap, or the orchestrator does not answer);
    else the :class:`Refusal` (:func:`record_queue_full`)."""
    if not cap.limit:
        return None
    try:
        queued = await queue_depth(nc)
    except UNKNOWN_DEPTH as exc:
        log.warning("queue_depth_unknown_admitted", error=str(exc))
        return None
    if queued + new_jobs <= cap.limit:
        return None
    log.warning("queue_full", queued=queued, limit=cap.limit, new_jobs=new_jobs)
    return await record_queue_full(store, cap, queued, correlation_id)

"""Admission control shared by every channel that submits work: the queue cap (``HERMES_MAX_QUEUED_JOBS``,
seed ``hermes.web.max_queued_jobs``).

Before a submission is published, the channel (the gateway's routes, the notifier's Telegram ideas) asks the
orchestrator how many jobs are open (queued, dispatched, running, retrying) plus workflow steps waiting for
their dependencies. At or beyond the cap the submission is refused and a ``QueueFull`` event is appended (at
most one per minute: its id is derived from the minute) for the notifier's ``queue_full`` alert. The count is
read, not reserved: concurrent submissions can pass the cap by the number in flight at once. When the
orchestrator does not answer within ``QUEUE_QUERY_TIMEOUT_S`` the submission is admitted: commands wait
durably in JetStream, and refusing work because a reader is restarting would lose more than it protects.
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


async def check_queue(
    nc: NATS, store: EventStore, cap: QueueCap, correlation_id: str, new_jobs: int = 1
) -> Refusal | None:
    """None when ``new_jobs`` more fit under the cap (or there is no cap, or the orchestrator does not answer);
    else the :class:`Refusal`, after appending the minute's ``QueueFull`` (a failed append is logged: the
    refusal stands without its alert)."""
    if not cap.limit:
        return None
    try:
        depth = await ask(nc, "The orchestrator", subjects.QUERY_QUEUE, Empty(), QueueReply, QUEUE_QUERY_TIMEOUT_S)
    except (BusUnavailable, BadReply, Refused) as exc:
        log.warning("queue_depth_unknown_admitted", error=str(exc))
        return None
    queued = depth.open_jobs + depth.waiting_steps
    if queued + new_jobs <= cap.limit:
        return None
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
    log.warning("queue_full", queued=queued, limit=cap.limit, new_jobs=new_jobs)
    return Refusal(queued, cap.limit, cap.retry_after_s)

"""Admission control: the queue cap (``HERMES_MAX_QUEUED_JOBS``, seed ``hermes.web.max_queued_jobs``).

Before a submission is published, the gateway asks the orchestrator how many jobs are open (queued,
dispatched, running, retrying) plus workflow steps waiting for their dependencies. At or beyond the cap the
submission is refused with HTTP 429 ``queue_full`` and ``Retry-After``, and a ``QueueFull`` event is appended
(at most one per minute: its id is derived from the minute) for the notifier's ``queue_full`` alert. The
count is read, not reserved: concurrent submissions can pass the cap by the number in flight at once. When the
orchestrator does not answer within ``QUEUE_QUERY_TIMEOUT_S`` the submission is admitted: commands wait durably
in JetStream, and refusing work because a reader is restarting would lose more than it protects.
"""

from __future__ import annotations

import structlog
from fastapi import Request

from hermes_gateway.adapters import BUS_ERRORS, BadReply, BusUnavailable, ReadModel
from hermes_gateway.config import GatewaySettings
from hermes_gateway.envelope import ApiError
from hermes_gateway.observability import SUBMISSIONS_REFUSED
from hermes_proto.events import QueueFull
from hermes_proto.ids import derived_id, utcnow

log = structlog.get_logger("hermes.gateway")

QUEUE_QUERY_TIMEOUT_S = 0.5


async def admit(request: Request, new_jobs: int = 1) -> None:
    """Raise :class:`ApiError` 429 ``queue_full`` when ``new_jobs`` more would pass the cap (no cap, or no answer
    from the orchestrator: return)."""
    settings: GatewaySettings = request.app.state.settings
    limit = settings.hermes_max_queued_jobs
    if not limit:
        return
    read_model: ReadModel = request.app.state.read_model
    try:
        depth = await read_model.queue(QUEUE_QUERY_TIMEOUT_S)
    except (BusUnavailable, BadReply) as exc:
        log.warning("queue_depth_unknown_admitted", error=str(exc))
        return
    queued = depth.open_jobs + depth.waiting_steps
    if queued + new_jobs <= limit:
        return
    retry_after = settings.hermes_queue_full_retry_after_seconds
    SUBMISSIONS_REFUSED.labels("queue_full").inc()
    now = utcnow()
    minute = now.strftime("%Y-%m-%dT%H:%M")
    event = QueueFull(event_id=derived_id("queue_full", minute), aggregate_id="queue", occurred_at=now,
                      correlation_id=request.state.request_id, queued=queued, limit=limit,
                      retry_after_s=float(retry_after))
    try:
        await request.app.state.bus.store.append([event])
    except BUS_ERRORS as exc:  # the refusal stands without its alert
        log.warning("queue_full_event_failed", error=repr(exc))
    log.warning("queue_full", queued=queued, limit=limit, new_jobs=new_jobs)
    raise ApiError(429, "queue_full", f"The job queue is full ({queued} open jobs, limit {limit}).",
                   details={"queued": queued, "limit": limit, "retry_after": retry_after}, retry_after=retry_after,
                   user_action=f"Retry in {retry_after} s, or raise HERMES_MAX_QUEUED_JOBS.")

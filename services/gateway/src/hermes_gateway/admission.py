"""Admission control at the HTTP edge: :mod:`hermes_proto.admission`'s queue cap, a refusal answered with
HTTP 429 ``queue_full`` and ``Retry-After``."""

from __future__ import annotations

from fastapi import Request

from hermes_proto.admission import QueueCap, check_queue

from hermes_gateway.config import GatewaySettings
from hermes_gateway.envelope import ApiError
from hermes_gateway.observability import SUBMISSIONS_REFUSED


async def admit(request: Request, new_jobs: int = 1) -> None:
    """Raise :class:`ApiError` 429 ``queue_full`` when ``new_jobs`` more would pass the cap (no cap, or no answer
    from the orchestrator: return)."""
    settings: GatewaySettings = request.app.state.settings
    bus = request.app.state.bus
    cap = QueueCap(settings.hermes_max_queued_jobs, settings.hermes_queue_full_retry_after_seconds)
    refusal = await check_queue(bus.nc, bus.store, cap, request.state.request_id, new_jobs)
    if refusal is None:
        return
    SUBMISSIONS_REFUSED.labels("queue_full").inc()
    raise ApiError(
        429,
        "queue_full",
        f"The job queue is full ({refusal.queued} open jobs, limit {refusal.limit}).",
        details={"queued": refusal.queued, "limit": refusal.limit, "retry_after": refusal.retry_after_s},
        retry_after=refusal.retry_after_s,
        user_action=f"Retry in {refusal.retry_after_s} s, or raise HERMES_MAX_QUEUED_JOBS.",
    )

"""``GET /api/system/health``: is the bus up, what do the streams hold, is the orchestrator answering.
``GET /api/system/queue``: the orchestrator's job queue depth."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hermes_proto.queries import QueueReply

from hermes_gateway.adapters import BadReply, BusUnavailable, stream_states
from hermes_gateway.deps import BusDep, ReadModelDep, SettingsDep
from hermes_gateway.envelope import ApiError, success, success_schema

router = APIRouter(prefix="/api/system", tags=["system"])

PING_TIMEOUT_S = 2.0


@router.get("/health")
async def health(request: Request, bus: BusDep, read_model: ReadModelDep, settings: SettingsDep) -> JSONResponse:
    """``{"status": "ok"|"degraded", "nats": {"connected"}, "streams": {name: {"messages", "last_seq",
    "consumers"}}, "orchestrator": {"answering", "latency_ms"|"error"}}``. 200 in the success envelope
    when everything answers; otherwise 503 ``degraded`` with the same report in ``error.details``."""
    connected = bus.nc.is_connected
    streams = await stream_states(bus.js) if connected else {}
    try:
        latency_ms = await read_model.ping(min(PING_TIMEOUT_S, settings.hermes_query_timeout_seconds))
        orchestrator = {"answering": True, "latency_ms": round(latency_ms, 3)}
    except (BusUnavailable, BadReply) as exc:
        orchestrator = {"answering": False, "error": str(exc)}
    healthy = (
        connected and bool(streams) and all("error" not in s for s in streams.values()) and orchestrator["answering"]
    )
    report = {
        "status": "ok" if healthy else "degraded",
        "nats": {"connected": connected},
        "streams": streams,
        "orchestrator": orchestrator,
    }
    if healthy:
        return success(request, report)
    problems = [name for name, ok in (("nats", connected), ("orchestrator", orchestrator["answering"])) if not ok]
    problems += [name for name, state in streams.items() if "error" in state]
    raise ApiError(
        503,
        "degraded",
        "Hermes is degraded: " + ", ".join(problems or ["streams"]) + " not answering.",
        details=report,
        retry_after=5,
        user_action="Start the missing services (`hermes up`).",
    )


@router.get(
    "/queue",
    responses={
        200: success_schema(QueueReply, "The open jobs."),
        503: {"description": "``bus_unavailable``: the orchestrator is not answering."},
    },
)
async def queue(request: Request, read_model: ReadModelDep) -> JSONResponse:
    """The orchestrator's queue (``hermes.query.queue``, its ``QueueReply``): ``{"open_jobs", "by_status"
    {queued, dispatched, running, retrying: count}, "by_priority" {"1".."10": count}, "waiting_steps"}``.
    Errors: 503 ``bus_unavailable``, 502 ``bad_reply``."""
    return success(request, await read_model.queue())

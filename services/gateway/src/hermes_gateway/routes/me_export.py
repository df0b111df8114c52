"""The data-rights export: everything Hermes holds about one person, as one JSON file
(:mod:`hermes_gateway.user_export` gathers it).

``GET /api/me/export``: the authenticated person's own data (the principal's user id; while auth is off every
request is user ``local``, so it is ``local``'s). ``GET /api/users/{user_id}/export``: any user's, for an admin
token only. A user id Hermes holds nothing for (there is no user registry: a user is whoever data is stored under)
answers 200 with every section empty, exactly like a user who has nothing stored yet.

Each export counts in ``hermes_gateway_user_exports_total{scope,outcome}`` and logs one ``user_export`` line with
the exported user id, who asked, and how many items each section holds (never their content).
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import Counter

from hermes_proto.queries import USER_ID_PATTERN

from hermes_gateway.auth import Principal
from hermes_gateway.deps import AdminDep, WriterDep
from hermes_gateway.envelope import ApiError
from hermes_gateway.user_export import FORMAT, SECTIONS, collect

log = structlog.get_logger("hermes.gateway")
router = APIRouter(prefix="/api", tags=["export"])

SCOPES, OUTCOMES = ("self", "admin"), ("complete", "truncated", "failed")
USER_EXPORTS = Counter(
    "hermes_gateway_user_exports_total",
    "Data-rights exports answered: scope self (GET /api/me/export) or admin (GET /api/users/{id}/export); outcome "
    "complete, truncated (the document names what it could not hold) or failed (a query failed: 5xx, no document)",
    ["scope", "outcome"],
)
for _scope in SCOPES:  # exported at 0 from the start, so increase() sees the first one
    for _outcome in OUTCOMES:
        USER_EXPORTS.labels(_scope, _outcome)
QUERY_TIMEOUT_S = 5.0
"""Seconds each read-model query may take at least (the orchestrator and the learner wait up to 2 s for the log
position first)."""
UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9_.@+-]")

_ITEMS = {"type": "array", "items": {"type": "object"}}
EXPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["user_id", "exported_at", "format", *SECTIONS, "truncated"],
    "properties": {
        "user_id": {"type": "string"},
        "exported_at": {"type": "string", "description": "ISO-8601, UTC"},
        "format": {"const": FORMAT},
        **dict.fromkeys(SECTIONS, _ITEMS),
        "truncated": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["section", "id", "reason"],
                "properties": {
                    "section": {"type": "string"},
                    "id": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
NOT_ANSWERING = {
    503: {"description": "``bus_unavailable``: the orchestrator or the learner did not answer; nothing is sent."},
    502: {"description": "``bad_reply``: a service answered outside the contract."},
}
DOCUMENT = {
    200: {
        "description": 'The export as an attachment (``Content-Disposition: attachment; filename="hermes-export-'
        '<user>.json"``), not in the success envelope.',
        "content": {"application/json": {"schema": EXPORT_SCHEMA}},
    },
    **NOT_ANSWERING,
}


@router.get("/me/export", response_class=Response, responses={**DOCUMENT, 403: {"description": "``read_only``"}})
async def export_me(request: Request, principal: WriterDep) -> Response:
    """Everything Hermes holds about you, as one JSON document: ``{"user_id", "exported_at" (ISO-8601 UTC),
    "format": "hermes-export/1", "threads" (idea, drafts, questions and answers, rating, status, jobs, times),
    "sessions" (each with its turns: prompt as sent, reply, backend, model, tokens, cost in cents, latency in ms;
    ``earlier_turns`` those the session's own reply had to leave out), "preferences" (every scope), "patterns",
    "memory_entries" (superseded, expired and deleted ones too), "agent_runs" (steps: model turns, tool calls and
    outcomes; approvals), "approvals", "schedules" (deleted ones too, with their runs), "skill_proposals" (with
    files and diff), "truncated" ([{"section", "id", "reason"}]: what could not be exported whole)}``.
    Errors: 403 ``read_only`` (a guest), 401 ``unauthorized``, 503 ``bus_unavailable``, 502 ``bad_reply``."""
    return await _export(request, principal, principal.user_id, "self")


@router.get(
    "/users/{user_id}/export",
    response_class=Response,
    responses={
        **DOCUMENT,
        400: {"description": "``invalid_id``: not a user id (``hermes_proto.queries.USER_ID_PATTERN``)."},
        403: {"description": "``admin_only``: only an admin token exports another user's data."},
    },
)
async def export_user(user_id: str, request: Request, principal: AdminDep) -> Response:
    """An admin's export of ``user_id``: the document of ``GET /api/me/export`` for that user (200 with every
    section empty when Hermes holds nothing for them). Errors: 403 ``admin_only`` (any other token), 400
    ``invalid_id``, 401 ``unauthorized``, 503 ``bus_unavailable``, 502 ``bad_reply``."""
    if not re.fullmatch(USER_ID_PATTERN, user_id):
        raise ApiError(
            400,
            "invalid_id",
            "user_id must be 1-128 letters, digits or '_', ':', '@', '.', '+', '-'.",
            details={"field": "user_id"},
        )
    return await _export(request, principal, user_id, "admin")


async def _export(request: Request, principal: Principal, user_id: str, scope: str) -> Response:
    started = time.perf_counter()
    state = request.app.state
    timeout_s = max(QUERY_TIMEOUT_S, state.settings.hermes_query_timeout_seconds)
    position = None
    try:
        # The log's end now, before any query: the export holds every event appended before it was asked for
        # (every query of it reads a read model that applied this sequence: see hermes_gateway.user_export).
        position = await state.read_model.log_position()
        document = await collect(state.bus.nc, user_id, timeout_s, position)
    except Exception as exc:
        USER_EXPORTS.labels(scope, "failed").inc()
        log.warning(
            "user_export_failed",
            user_id=user_id,
            scope=scope,
            requested_by=principal.user_id,
            position=position,
            error=repr(exc),
        )
        raise
    outcome = "truncated" if document["truncated"] else "complete"
    USER_EXPORTS.labels(scope, outcome).inc()
    log.info(
        "user_export",
        user_id=user_id,
        scope=scope,
        requested_by=principal.user_id,
        outcome=outcome,
        position=position,
        items={section: len(document[section]) for section in SECTIONS},
        truncated=sorted({t["section"] for t in document["truncated"]}),
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
    )
    body = msgspec.json.format(msgspec.json.encode(document), indent=2)
    name = f"hermes-export-{UNSAFE_IN_FILENAME.sub('_', user_id)}.json"
    return Response(
        body, media_type="application/json", headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )

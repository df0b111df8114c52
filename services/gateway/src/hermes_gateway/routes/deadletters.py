"""Dead letters: what the consumers could not process (``HERMES_DLQ``), listed newest first and replayed by an
operator once the cause is fixed. Read straight from JetStream (:mod:`hermes_gateway.deadletters`), so they
answer while every other service is down."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hermes_proto.deadletter import DeadLetterReplayed
from hermes_proto.queries import MAX_SEQUENCE  # a larger sequence is a bad request, not a lookup

from hermes_gateway.deadletters import DeadLetterArchive, DeadLetterPage
from hermes_gateway.deps import AdminDep, BusDep
from hermes_gateway.domain import check_id
from hermes_gateway.envelope import success, success_schema

router = APIRouter(prefix="/api/system/dead-letters", tags=["system"])

BUS_DOWN: dict[int | str, dict[str, Any]] = {503: {"description": "``bus_unavailable``: JetStream is not answering."}}


class ReplayBody(BaseModel):
    """``payload``: the corrected message (a JSON object) to publish instead of the original one."""

    payload: dict[str, Any] | None = None


@router.get(
    "",
    responses={
        200: success_schema(DeadLetterPage, "Dead letters, newest first."),
        **BUS_DOWN,
        400: {"description": "``invalid_id``: bad ``consumer`` or ``reason``."},
    },
)
async def list_dead_letters(
    request: Request,
    bus: BusDep,
    principal: AdminDep,
    consumer: str | None = None,
    reason: str | None = None,
    before: Annotated[int | None, Query(ge=1, le=MAX_SEQUENCE)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """Dead letters newest first: ``{"dead_letters": [{"dlq_sequence" (the id to replay), "consumer", "stream",
    "subject", "stream_sequence" (where the message was), "deliveries", "headers", "payload" (text), "reason"
    (invalid_json, validation_failed, invalid_idea, max_deliveries, handler_error), "detail", "dead_lettered_at",
    "replayable", "replayed_at" (null until replayed), "replay" (the marker)}], "next_before"}``. Filters:
    ``consumer`` (a durable name, e.g. ``orchestrator-commands``), ``reason``; ``limit`` 1-500 (default 50);
    ``before``: only records with a lower ``dlq_sequence`` (pass the previous page's ``next_before``).
    Errors: 400 ``invalid_id``, 422 ``validation_failed``, 503 ``bus_unavailable``."""
    for value, what in ((consumer, "consumer"), (reason, "reason")):
        if value is not None:
            check_id(value, what)
    return success(request, await DeadLetterArchive(bus.js).page(consumer, reason, before, limit))


@router.post(
    "/{dlq_seq}/replay",
    responses={
        200: success_schema(DeadLetterReplayed, "Replayed: where it landed."),
        **BUS_DOWN,
        404: {"description": "``dead_letter_not_found``: no dead-letter record has that sequence."},
        409: {"description": "``not_replayable`` (an event of HERMES_EVENTS) or ``already_replayed``."},
        422: {
            "description": "``invalid_payload``: the payload would be dead-lettered again; ``validation_failed``: "
            "``payload`` is not a JSON object."
        },
    },
)
async def replay_dead_letter(
    request: Request,
    bus: BusDep,
    principal: AdminDep,
    dlq_seq: Annotated[int, Path(ge=1, le=MAX_SEQUENCE)],
    body: ReplayBody | None = None,
) -> JSONResponse:
    """Publish dead letter ``dlq_seq`` again on its original subject, with its original headers except
    ``Nats-Msg-Id``, which becomes ``replay-<dlq_seq>`` (a second click inside JetStream's duplicate window
    is dropped; after it, the marker answers 409 ``already_replayed``). Optional body ``{"payload": {...}}``:
    a corrected message to publish instead. Only dead letters of ``HERMES_COMMANDS`` and ``HERMES_EXEC``
    replay; one of ``HERMES_EVENTS`` is still in the log, so it is refused (409 ``not_replayable``). The
    replay is recorded as a ``DeadLetterReplayed`` marker on ``hermes.dlq.replayed.<dlq_seq>``, returned
    here: ``{"dlq_sequence", "consumer", "stream", "subject", "stream_sequence" (where it landed),
    "corrected", "replayed_at"}``. Errors: 404 ``dead_letter_not_found``, 409 ``not_replayable`` /
    ``already_replayed``, 422 ``invalid_payload`` / ``validation_failed``, 503 ``bus_unavailable``."""
    corrected = body.payload if body is not None else None
    return success(request, await DeadLetterArchive(bus.js).replay(dlq_seq, corrected))

"""Forgetting a person (crypto-shredding, :mod:`hermes_proto.forgetting`): their data keys destroyed for good.

``DELETE /api/me``: the authenticated person forgets themself (while auth is off every request is user ``local``).
``DELETE /api/users/{user_id}``: an admin forgets anyone. Both need the JSON body ``{"confirm": "<the user id>"}``
(400 ``confirmation_required`` without it, ``confirmation_mismatch`` when it names someone else), send
``ForgetUser`` on ``hermes.cmd.forget_user`` and follow ``HERMES_EVENTS`` from the log's end before the send (one
ephemeral ordered consumer on ``hermes.evt.privacy.*.personal_data_forgotten``) for up to :data:`WAIT_S` seconds,
until the orchestrator's ``PersonalDataForgotten`` whose ``causation_id`` is the command's id arrives: 200 with how
many keys it destroyed, else 202 (the command is stored; the orchestrator applies it when it can).

Each forget counts in ``hermes_gateway_user_forgets_total{scope,outcome}`` and logs one ``user_forget`` line (the
user id, who asked, the command id, how many keys).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import msgspec
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from prometheus_client import Counter

from hermes_proto import subjects as subj
from hermes_proto.bus import resume_after
from hermes_proto.codec import UNDECODABLE, DecodeError, decode_event
from hermes_proto.forgetting import ForgetUser, PersonalDataForgotten
from hermes_proto.ids import new_id, utcnow
from hermes_proto.queries import USER_ID_PATTERN
from hermes_proto.rpc import BUS_ERRORS

from hermes_gateway.auth import Principal
from hermes_gateway.deps import AdminDep, WriterDep
from hermes_gateway.envelope import ApiError, success, success_schema

log = structlog.get_logger("hermes.gateway")
router = APIRouter(prefix="/api", tags=["privacy"])

WAIT_S = 10.0
"""Seconds a forget waits for the orchestrator's ``PersonalDataForgotten`` before answering 202."""
FORGOTTEN_EVENTS = subj.event_type_filter(PersonalDataForgotten)
HEARTBEAT_S = 2.0
SCOPES, OUTCOMES = ("self", "admin"), ("forgotten", "accepted")
USER_FORGETS = Counter(
    "hermes_gateway_user_forgets_total",
    "Forgets answered: scope self (DELETE /api/me) or admin (DELETE /api/users/{id}); outcome forgotten (200: the "
    "keys are destroyed) or accepted (202: the command is stored, the orchestrator did not confirm in time)",
    ["scope", "outcome"],
)
for _scope in SCOPES:  # exported at 0 from the start, so increase() sees the first one
    for _outcome in OUTCOMES:
        USER_FORGETS.labels(_scope, _outcome)


class Forgotten(msgspec.Struct, frozen=True):
    """200: ``user_id``'s data keys are destroyed; ``keys_destroyed`` how many, ``sequence`` the ``HERMES_EVENTS``
    sequence of the ``PersonalDataForgotten`` event that says so."""

    user_id: str
    keys_destroyed: int
    sequence: int


class ForgetAccepted(msgspec.Struct, frozen=True):
    """202: the ``ForgetUser`` command ``command_id`` is stored; the orchestrator did not confirm within
    :data:`WAIT_S` seconds (it applies it when it runs)."""

    user_id: str
    command_id: str
    status: str = "accepted"


class _Confirmation(msgspec.Struct):
    confirm: str


_decode_confirmation = msgspec.json.Decoder(_Confirmation)

REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["confirm"],
                    "properties": {
                        "confirm": {"type": "string", "description": "The user id being forgotten, typed again."}
                    },
                }
            }
        },
    }
}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: success_schema(Forgotten, "Forgotten: the data keys are destroyed."),
    202: success_schema(ForgetAccepted, "Accepted: the command is stored, the orchestrator has not confirmed yet."),
    400: {"description": "``confirmation_required``, ``confirmation_mismatch``, ``invalid_json`` or ``invalid_id``."},
    503: {"description": "``bus_unavailable``: JetStream did not take the command; nothing is forgotten."},
}


@router.delete("/me", responses={**ANSWERS, 403: {"description": "``read_only``: a guest"}}, openapi_extra=REQUEST_BODY)
async def forget_me(request: Request, principal: WriterDep) -> JSONResponse:
    """Forget yourself for good: every data key of your threads, sessions, preferences, memory entries, schedules
    and skill proposals is destroyed (the log keeps them sealed, unreadable). Body ``{"confirm": "<your user
    id>"}``. 200 ``{"user_id", "keys_destroyed", "sequence"}``; 202 ``{"user_id", "command_id", "status":
    "accepted"}`` when not confirmed within 10 s. Errors: 400 ``confirmation_required`` / ``confirmation_mismatch``
    / ``invalid_json``, 403 ``read_only`` (a guest), 401 ``unauthorized``, 503 ``bus_unavailable``."""
    await _confirmed(request, principal.user_id)
    return await _forget(request, principal, principal.user_id, "self")


@router.delete(
    "/users/{user_id}",
    responses={**ANSWERS, 403: {"description": "``admin_only``: only an admin token forgets another user."}},
    openapi_extra=REQUEST_BODY,
)
async def forget_user(user_id: str, request: Request, principal: AdminDep) -> JSONResponse:
    """An admin forgets ``user_id`` (as ``DELETE /api/me`` for that user; a user Hermes holds nothing for is
    forgotten with 0 keys). Body ``{"confirm": "<user_id>"}``. Errors: 403 ``admin_only`` (any other token), 400
    ``invalid_id`` / ``confirmation_required`` / ``confirmation_mismatch`` / ``invalid_json``, 401 ``unauthorized``,
    503 ``bus_unavailable``."""
    if not re.fullmatch(USER_ID_PATTERN, user_id):
        raise ApiError(
            400,
            "invalid_id",
            "user_id must be 1-128 letters, digits or '_', ':', '@', '.', '+', '-'.",
            details={"field": "user_id"},
        )
    await _confirmed(request, user_id)
    return await _forget(request, principal, user_id, "admin")


async def _confirmed(request: Request, user_id: str) -> None:
    """Raises 400 unless the body is ``{"confirm": user_id}`` (other fields are ignored)."""
    action = f'Send the JSON body {{"confirm": "{user_id}"}} to forget {user_id} for good.'
    raw = await request.body()
    body: _Confirmation | None = None
    problem = "no body"
    if raw.strip():
        try:
            body = _decode_confirmation.decode(raw)
        except msgspec.ValidationError as exc:
            problem = str(exc)
        except UNDECODABLE:
            raise ApiError(
                400, "invalid_json", "The request body is not valid JSON.", user_action="Send a JSON object."
            ) from None
    if body is None:
        raise ApiError(
            400,
            "confirmation_required",
            'A forget needs the JSON body {"confirm": "<user id>"}.',
            details={"field": "confirm", "problem": problem},
            user_action=action,
        )
    if body.confirm != user_id:
        raise ApiError(
            400,
            "confirmation_mismatch",
            "confirm does not name the user being forgotten.",
            details={"field": "confirm"},
            user_action=action,
        )


async def _forget(request: Request, principal: Principal, user_id: str, scope: str) -> JSONResponse:
    state = request.app.state
    requested_by = "self" if scope == "self" else "admin"
    command = ForgetUser(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=getattr(request.state, "request_id", None),
        user_id=user_id,
        requested_by=requested_by,
    )
    position = await state.read_model.log_position()  # 503 bus_unavailable: nothing sent
    js: JetStreamContext = state.bus.js
    found: asyncio.Future[tuple[PersonalDataForgotten, int]] = asyncio.get_running_loop().create_future()
    sub = await _follow(js, position, command.command_id, found)
    try:
        await state.commands.send(command)  # 503 bus_unavailable when JetStream does not take it
        done = None
        if sub is not None:
            try:
                done = await asyncio.wait_for(found, WAIT_S)
            except TimeoutError:
                done = None
    finally:
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # noqa: BLE001 - a lost connection: the server drops the consumer
                log.debug("forget_unsubscribe_failed", error=repr(exc))
    outcome = "forgotten" if done is not None else "accepted"
    USER_FORGETS.labels(scope, outcome).inc()
    log.info(
        "user_forget",
        user_id=user_id,
        scope=scope,
        requested_by=principal.user_id,
        command_id=command.command_id,
        outcome=outcome,
        keys=len(done[0].key_ids) if done is not None else None,
        sequence=done[1] if done is not None else None,
    )
    if done is None:
        return success(request, ForgetAccepted(user_id, command.command_id), status_code=202)
    event, sequence = done
    return success(request, Forgotten(user_id, len(event.key_ids), sequence))


async def _follow(
    js: JetStreamContext, position: int, command_id: str, found: asyncio.Future[tuple[PersonalDataForgotten, int]]
) -> Any:
    """An ordered consumer of the ``PersonalDataForgotten`` events after ``position`` that resolves ``found`` with
    the one caused by ``command_id`` (and its sequence); None when JetStream refuses it (the forget still goes
    out, answered 202)."""

    async def on_msg(msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return
        if type(event) is PersonalDataForgotten and event.causation_id == command_id and not found.done():
            found.set_result((event, msg.metadata.sequence.stream))

    try:
        sub = await js.subscribe(
            FORGOTTEN_EVENTS,
            stream=subj.EVENTS_STREAM,
            cb=on_msg,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_S,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=position + 1),
        )
    except BUS_ERRORS as exc:
        log.warning("forget_follow_failed", command_id=command_id, error=repr(exc))
        return None
    resume_after(sub, position)
    return sub

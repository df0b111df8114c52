"""Schedules: ``POST /api/schedules``, ``GET /api/schedules[/{id}]`` (with its runs), ``PUT /api/schedules/{id}``,
``POST /api/schedules/{id}/pause|resume|run``, ``DELETE /api/schedules/{id}``.

A definition is checked here with the orchestrator's own rule (:func:`hermes_proto.schedules.problem`), so a bad
cron expression, time zone or trigger is a 400 ``invalid_schedule`` at once rather than a silent refusal later. Only
the schedule's user sees or changes it (another user gets 404, a guest 403)."""

from __future__ import annotations

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto import schedules as sc
from hermes_proto import subjects as subj
from hermes_proto.base import Command
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import ask
from hermes_proto.schedule_queries import ScheduleQuery, ScheduleReply, SchedulesQuery, SchedulesReply, ScheduleView

from hermes_gateway.auth import owner_id, scope_user
from hermes_gateway.deps import BusDep, CommandsDep, PrincipalDep, ReadModelDep, WriterDep
from hermes_gateway.envelope import ApiError, success

router = APIRouter(prefix="/api", tags=["schedules"])
TIMEOUT_S = 5.0
_decode_definition = msgspec.json.Decoder(sc.Definition)


class ScheduleBody(BaseModel):
    """A schedule: ``name``; ``when`` ``{"kind": "cron", "cron": "0 7 * * 1-5", "timezone": "Europe/Berlin"}``,
    ``{"kind": "at", "at": "2026-12-24T18:00:00+01:00"}``, ``{"kind": "subject", "subject":
    "hermes.inbox.event.github.push"}``, ``{"kind": "file", "path": "inbox/*.md"}`` or ``{"kind": "git", "path":
    "/srv/repo"}``; ``action`` ``{"kind": "idea"|"agent"|"workflow", "text", "profile", "project", "steps"}``;
    ``deliver`` ``{"to": "telegram"|"webhook"|"inbox"|"log", "chat_id", "url"}``; ``missed`` run_once|skip;
    ``overlap`` skip|queue|allow. Checked as :class:`hermes_proto.schedules.Definition`."""

    name: StrictStr = Field(min_length=1, max_length=120)
    when: dict
    action: dict
    deliver: dict = {}
    missed: StrictStr = "skip"
    overlap: StrictStr = "skip"
    user_id: StrictStr = Field(default="local", max_length=128)
    schedule_id: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")


def definition_of(body: ScheduleBody) -> sc.Definition:
    """The body as a :class:`Definition`; 400 ``invalid_schedule`` with the reason otherwise."""
    raw = body.model_dump(include={"name", "when", "action", "deliver", "missed", "overlap"})
    try:
        definition = _decode_definition.decode(msgspec.json.encode(raw))
    except msgspec.ValidationError as exc:
        raise ApiError(400, "invalid_schedule", str(exc)) from None
    problem = sc.problem(definition, utcnow())
    if problem is not None:
        raise ApiError(400, "invalid_schedule", problem)
    return definition


def _plain(struct) -> dict:  # noqa: ANN001
    return msgspec.to_builtins(struct)


async def _one(bus, read_model, schedule_id: str, principal, runs: int = 50) -> ScheduleView:  # noqa: ANN001
    query = ScheduleQuery(
        schedule_id=schedule_id,
        user_id=scope_user(principal),
        runs_limit=runs,
        min_sequence=read_model.seen_position(),
    )
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_SCHEDULE, query, ScheduleReply, TIMEOUT_S)
    if not reply.found or reply.schedule is None or reply.schedule.status == "deleted":
        raise ApiError(404, "not_found", f"No schedule {schedule_id!r}.")
    return reply.schedule


async def _send(request: Request, commands, command: Command, schedule_id: str, status: int = 202) -> JSONResponse:  # noqa: ANN001
    await commands.send(command)
    return success(
        request,
        {"schedule_id": schedule_id, "url": f"/api/schedules/{schedule_id}", "command_id": command.command_id},
        status_code=status,
    )


def _envelope(request: Request) -> dict:
    return {"command_id": new_id(), "issued_at": utcnow(), "correlation_id": request.state.request_id}


@router.post("/schedules", status_code=202)
async def create_schedule(
    body: ScheduleBody,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
) -> JSONResponse:
    """Create a schedule. 202 ``{"schedule_id", "url", "command_id"}``; 400 ``invalid_schedule`` (with the reason);
    409 ``schedule_exists`` for a ``schedule_id`` already taken; 403 for a guest."""
    definition = definition_of(body)
    schedule_id = body.schedule_id or new_id()
    if body.schedule_id is not None:
        query = ScheduleQuery(schedule_id=schedule_id, min_sequence=read_model.seen_position())
        if (await ask(bus.nc, "The orchestrator", subj.QUERY_SCHEDULE, query, ScheduleReply, TIMEOUT_S)).found:
            raise ApiError(409, "schedule_exists", f"Schedule {schedule_id!r} exists.")
    command = sc.CreateSchedule(
        **_envelope(request),
        schedule_id=schedule_id,
        definition=definition,
        user_id=owner_id(request, body.user_id),
        channel=request.headers.get("x-hermes-channel", "api")[:32],
    )
    return await _send(request, commands, command, schedule_id)


@router.get("/schedules")
async def list_schedules(
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    limit: int = Query(200, ge=1, le=1000),
) -> JSONResponse:
    """200 ``{"schedules": [{"schedule_id", "definition", "status", "next_due_at", "last_outcome", "last_run_at",
    "runs_total", "missed_total", "failures_in_row", "running"}]}``, newest first; only the caller's while auth is on."""
    query = SchedulesQuery(user_id=scope_user(principal), limit=limit, min_sequence=read_model.seen_position())
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_SCHEDULES, query, SchedulesReply, TIMEOUT_S)
    return success(request, {"schedules": [_plain(s) for s in reply.schedules]})


@router.get("/schedules/{schedule_id}")
async def get_schedule(
    schedule_id: str,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    runs: int = Query(50, ge=1, le=500),
) -> JSONResponse:
    """200 the schedule with ``runs`` (newest first: ``due_key``, ``run_id``, ``outcome`` running, completed,
    failed, missed, skipped or queued, ``lateness_ms``, ``duration_ms``, ``error_code``); 404 ``not_found``."""
    return success(request, _plain(await _one(bus, read_model, schedule_id, principal, runs)))


@router.put("/schedules/{schedule_id}", status_code=202)
async def change_schedule(
    schedule_id: str,
    body: ScheduleBody,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
) -> JSONResponse:
    """Replace the definition. 202; 400 ``invalid_schedule``; 404 ``not_found``."""
    definition = definition_of(body)
    current = await _one(bus, read_model, schedule_id, writer)
    command = sc.ChangeSchedule(
        **_envelope(request), schedule_id=schedule_id, definition=definition, user_id=current.user_id
    )
    return await _send(request, commands, command, schedule_id)


async def _simple(kind: type, schedule_id: str, request: Request, bus, read_model, commands, writer) -> JSONResponse:  # noqa: ANN001
    current = await _one(bus, read_model, schedule_id, writer)
    if kind is sc.PauseSchedule and current.status == "paused":
        raise ApiError(409, "already_paused", "The schedule is paused already.")
    if kind is sc.ResumeSchedule and current.status == "active":
        raise ApiError(409, "not_paused", "The schedule is not paused.")
    return await _send(
        request, commands, kind(**_envelope(request), schedule_id=schedule_id, user_id=current.user_id), schedule_id
    )


@router.post("/schedules/{schedule_id}/pause", status_code=202)
async def pause_schedule(
    schedule_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Pause: nothing fires and nothing counts as missed until resumed. 202; 404; 409 ``already_paused``."""
    return await _simple(sc.PauseSchedule, schedule_id, request, bus, read_model, commands, writer)


@router.post("/schedules/{schedule_id}/resume", status_code=202)
async def resume_schedule(
    schedule_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Resume from now (due times that passed while paused are not run). 202; 404; 409 ``not_paused``."""
    return await _simple(sc.ResumeSchedule, schedule_id, request, bus, read_model, commands, writer)


@router.delete("/schedules/{schedule_id}", status_code=202)
async def delete_schedule(
    schedule_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Delete (a run already going finishes and is recorded). 202; 404."""
    return await _simple(sc.DeleteSchedule, schedule_id, request, bus, read_model, commands, writer)


@router.post("/schedules/{schedule_id}/run", status_code=202)
async def run_schedule_now(
    schedule_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Run it now, once (also while paused); the overlap policy still applies. 202 with ``due_key``; 404."""
    current = await _one(bus, read_model, schedule_id, writer)
    envelope = _envelope(request)
    key = f"manual:{envelope['command_id']}"
    command = sc.FireSchedule(
        **envelope, schedule_id=schedule_id, due_key=key, reason="manual", seen_at=utcnow(), user_id=current.user_id
    )
    await commands.send(command)
    return success(
        request, {"schedule_id": schedule_id, "due_key": key, "command_id": command.command_id}, status_code=202
    )

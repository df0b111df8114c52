"""Project memory: ``GET /api/memory/entries`` (``?project=``, ``?history=true`` for superseded, expired and deleted
ones too), ``PUT /api/memory/entries/{id}`` (text, kind, expiry), ``DELETE /api/memory/entries/{id}``, ``POST
/api/memory/consolidate`` (run the historian now). Only the entry's user sees or changes it (another user gets 404,
a guest 403); who edits comes from the request's authentication."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from hermes_proto import project_memory as pm
from hermes_proto import subjects as subj
from hermes_proto.ids import new_id, utcnow
from hermes_proto.memory_queries import MemoryEntriesQuery, MemoryEntriesReply
from hermes_proto.rpc import ask

from hermes_gateway.auth import owner_id, scope_user
from hermes_gateway.deps import BusDep, CommandsDep, PrincipalDep, ReadModelDep, WriterDep
from hermes_gateway.envelope import ApiError, success

router = APIRouter(prefix="/api", tags=["memory"])
TIMEOUT_S = 5.0


class EntryEdit(BaseModel):
    text: StrictStr = Field(min_length=1, max_length=2000)
    kind: Literal["decision", "pattern", "correction", "preference"]
    expires_at: datetime | None = None


class ConsolidateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")  # every field is optional: an unknown one is a mistake, not ignored

    project: StrictStr | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    user_id: StrictStr = Field(default="local", max_length=128)


async def _entries(bus, read_model, principal, project=None, history=False, limit=200):  # noqa: ANN001, ANN202
    query = MemoryEntriesQuery(
        user_id=scope_user(principal),
        project=project,
        history=history,
        limit=limit,
        min_sequence=read_model.seen_position(),
    )
    return (
        await ask(bus.nc, "The orchestrator", subj.QUERY_MEMORY_ENTRIES, query, MemoryEntriesReply, TIMEOUT_S)
    ).entries


@router.get("/memory/entries")
async def list_entries(
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    project: str | None = Query(None, max_length=64),
    history: bool = False,
    limit: int = Query(200, ge=1, le=2000),
) -> JSONResponse:
    """200 ``{"entries": [{"entry_id", "project", "kind", "key", "text", "relevance", "status", "source_session",
    "sessions", "supersedes", "superseded_by", "recorded_at", "expires_at"}]}`` by project, then relevance."""
    found = await _entries(bus, read_model, principal, project, history, limit)
    return success(request, {"entries": [msgspec.to_builtins(e) for e in found]})


async def _owned(bus, read_model, writer, entry_id: str):  # noqa: ANN001, ANN202
    for entry in await _entries(bus, read_model, writer, history=True, limit=2000):
        if entry.entry_id == entry_id and entry.status != "deleted":
            return entry
    raise ApiError(404, "not_found", f"No memory entry {entry_id!r}.")


@router.put("/memory/entries/{entry_id}", status_code=202)
async def edit_entry(
    entry_id: str,
    body: EntryEdit,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
) -> JSONResponse:
    """Replace the entry's text, kind and expiry. 202 ``{"entry_id", "command_id"}``; 404 ``not_found``; 403 guest."""
    entry = await _owned(bus, read_model, writer, entry_id)
    command = pm.EditMemoryEntry(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        entry_id=entry_id,
        text=body.text,
        kind=body.kind,
        expires_at=body.expires_at,
        user_id=entry.user_id,
    )
    await commands.send(command)
    return success(request, {"entry_id": entry_id, "command_id": command.command_id}, status_code=202)


@router.delete("/memory/entries/{entry_id}", status_code=202)
async def delete_entry(
    entry_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Delete the entry: it never reaches a prompt again and the historian does not bring it back. 202; 404."""
    entry = await _owned(bus, read_model, writer, entry_id)
    command = pm.DeleteMemoryEntry(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        entry_id=entry_id,
        user_id=entry.user_id,
    )
    await commands.send(command)
    return success(request, {"entry_id": entry_id, "command_id": command.command_id}, status_code=202)


@router.post("/memory/consolidate", status_code=202)
async def consolidate(
    request: Request, commands: CommandsDep, writer: WriterDep, body: ConsolidateBody
) -> JSONResponse:
    """Run the historian now over the caller's ended threads (body ``{}``, or ``{"project": P}``). 202
    ``{"command_id"}``; 422 without a JSON body."""
    command = pm.ConsolidateMemory(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        project=body.project,
        user_id=owner_id(request, body.user_id),
    )
    await commands.send(command)
    return success(request, {"command_id": command.command_id}, status_code=202)

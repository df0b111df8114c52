"""Sessions (every channel's captured turns), memory search and SOUL.md, as the orchestrator answers them
(:mod:`hermes_proto.sessions`). While auth is on, a principal sees only its own sessions and memories: another
user's session answers 404 exactly like an unknown one."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto.sessions import MemoryQuery, MemoryReply, SessionsQuery, SessionsReply, SessionView, SoulReply

from hermes_gateway.adapters import SessionsClient
from hermes_gateway.auth import auth_enabled, visible
from hermes_gateway.deps import AdminDep, PrincipalDep, ReadModelDep, WriterDep
from hermes_gateway.envelope import ApiError, success, success_schema

router = APIRouter(prefix="/api", tags=["sessions"])
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
CHANNEL = r"^[a-z][a-z0-9_]{0,31}$"


async def _sessions(request: Request) -> SessionsClient:
    return request.app.state.sessions


SessionsDep = Annotated[SessionsClient, Depends(_sessions)]


def _plain(value: object) -> object:
    return msgspec.to_builtins(value)


@router.get("/sessions", responses={200: success_schema(SessionsReply, "Sessions, newest activity first.")})
async def list_sessions(
    request: Request,
    sessions: SessionsDep,
    principal: PrincipalDep,
    channel: Annotated[str | None, Query(pattern=CHANNEL)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """``{"sessions": [...]}``: the principal's sessions (every user's while auth is off), without turns;
    ``channel`` filters (web, cli, api, telegram, perception...)."""
    user = principal.user_id if auth_enabled(principal) else None
    views = await sessions.sessions(SessionsQuery(user_id=user, channel=channel, limit=limit))
    return success(request, {"sessions": _plain(views)})


@router.get("/sessions/{session_id}", responses={200: success_schema(SessionView, "The session and its turns.")})
async def get_session(
    session_id: str, request: Request, sessions: SessionsDep, read_model: ReadModelDep, principal: PrincipalDep
) -> JSONResponse:
    """One session with every turn: the prompt as sent (SOUL and memory markers included), the reply, backend,
    model, tokens, cost (cents), latency (ms), rating and the memories it was given; read after every event this
    gateway has shown (read-your-writes). 404 ``not_found``."""
    if not SESSION_ID.fullmatch(session_id):
        raise ApiError(
            400, "invalid_id", "session_id must be 1-128 letters, digits, '-' or '_'.", details={"field": "session_id"}
        )
    view = await sessions.session(session_id, read_model.seen_position())
    if view is None or not visible(principal, view.user_id):
        raise ApiError(404, "not_found", f"No session {session_id}.")
    return success(request, _plain(view))


@router.get("/memory/search", responses={200: success_schema(MemoryReply, "Matching turns, best first.")})
async def search_memory(
    request: Request,
    sessions: SessionsDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    q: Annotated[str, Query(min_length=1, max_length=500)],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    """``{"hits": [...]}``: captured turns matching the words of ``q`` (SQLite FTS5, bm25 order; the principal's own
    while auth is on), each with its session, channel, prompt, reply and a snippet with the hits in ``[…]``."""
    user = principal.user_id if auth_enabled(principal) else None
    hits = await sessions.memory(MemoryQuery(q=q, user_id=user, limit=limit, min_sequence=read_model.seen_position()))
    return success(request, {"hits": _plain(hits)})


class SoulIn(BaseModel):
    """``text``: the new SOUL.md (the system prompt of every channel's turns), at most 20,000 characters."""

    text: StrictStr = Field(min_length=1, max_length=20_000)


@router.get("/soul", responses={200: success_schema(SoulReply, "SOUL.md.")})
async def get_soul(request: Request, sessions: SessionsDep, principal: WriterDep) -> JSONResponse:
    """``{"text", "path"}``: SOUL.md as the orchestrator applies it (users only: guests get 403)."""
    return success(request, _plain(await sessions.soul()))


@router.put("/soul", responses={200: success_schema(SoulReply, "SOUL.md as now in force.")})
async def put_soul(body: SoulIn, request: Request, sessions: SessionsDep, principal: AdminDep) -> JSONResponse:
    """Replace SOUL.md; every turn queued from now on, of every user, starts with it (admins only: 403
    ``admin_only``). Returns it as now in force."""
    return success(request, _plain(await sessions.soul(body.text)))

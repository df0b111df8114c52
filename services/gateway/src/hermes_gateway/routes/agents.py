"""Agent runs and their approvals: ``POST /api/agent/runs``, ``GET /api/agent/runs[/{id}]``, ``POST
/api/agent/runs/{id}/cancel``, ``GET /api/agent/profiles``, ``GET /api/approvals``, ``POST
/api/approvals/{id}/approve|reject``. A run streams live on ``GET /api/threads/{id}/events`` (a run is a thread).

Only the run's user sees or answers its approvals (another user gets 404, a guest 403); the approver's identity comes
from the request's authentication, never from the body.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto import subjects as subj
from hermes_proto.agent_queries import (
    AgentRunQuery,
    AgentRunReply,
    AgentRunsQuery,
    AgentRunsReply,
    ApprovalsQuery,
    ApprovalsReply,
    ProfilesReply,
)
from hermes_proto.agents import CancelAgentRun, DecideApproval, StartAgentRun
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import ask

from hermes_gateway.admission import admitted
from hermes_gateway.auth import auth_enabled, owner_id, scope_user
from hermes_gateway.deps import BusDep, CommandsDep, PrincipalDep, ReadModelDep, SettingsDep, WriterDep
from hermes_gateway.domain import clean_idea
from hermes_gateway.envelope import ApiError, success

router = APIRouter(prefix="/api", tags=["agents"])
TIMEOUT_S = 5.0


class RunRequest(BaseModel):
    """``task`` (what the agent should do), ``profile`` (code, research, fileops or one of ``$HERMES_HOME/agents``;
    None: picked from the task), ``project`` (its workspace ``$HERMES_HOME/workspace/<project>``)."""

    task: StrictStr
    profile: StrictStr | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,32}$")
    project: StrictStr = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    channel: StrictStr = Field(default="api", pattern=r"^[a-z_]{1,32}$")
    user_id: StrictStr = Field(default="local", max_length=128)


class ApprovalAnswer(BaseModel):
    scope: Literal["once", "run"] = "once"
    comment: StrictStr = Field(default="", max_length=2000)


async def _profiles(bus) -> ProfilesReply:  # noqa: ANN001
    return await ask(bus.nc, "The orchestrator", subj.QUERY_AGENT_PROFILES, AgentRunsQuery(), ProfilesReply, TIMEOUT_S)


@router.get("/agent/profiles")
async def list_profiles(request: Request, bus: BusDep, principal: PrincipalDep) -> JSONResponse:
    """200 ``{"profiles": [{"name", "description", "tools", "max_iterations", "approval_required", "timeout_s"}]}``."""
    reply = await _profiles(bus)
    return success(request, {"profiles": [_plain(p) for p in reply.profiles]})


@router.post("/agent/runs", status_code=202)
async def start_run(
    body: RunRequest, request: Request, settings: SettingsDep, commands: CommandsDep, bus: BusDep, writer: WriterDep
) -> JSONResponse:
    """Start an agent run. 202 ``{"run_id", "thread_id", "profile", "url", "events_url", "command_id"}``.
    Errors: 400 ``empty_idea``/413 ``idea_too_long`` for the task, 404 ``unknown_profile``, 422 ``validation_failed``,
    429 ``queue_full``, 503 ``bus_unavailable``."""
    task = clean_idea(body.task, settings.hermes_max_input_length)
    if body.profile is not None:
        known = {p.name for p in (await _profiles(bus)).profiles}
        if body.profile not in known:
            raise ApiError(
                404,
                "unknown_profile",
                f"No agent profile {body.profile!r}.",
                details={"known": sorted(known)},
                user_action="Use GET /api/agent/profiles, or leave the profile out to have one picked.",
            )
    run_id = new_id()
    command = StartAgentRun(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        thread_id=run_id,
        task=task,
        profile=body.profile,
        project=body.project,
        channel=body.channel,
        user_id=owner_id(request, body.user_id),
    )
    async with admitted(request, new_jobs=1) as hold:
        request.state.thread_id = run_id
        bus.events.expect(run_id)
        hold.bind(await commands.send(command))
    return success(
        request,
        {
            "run_id": run_id,
            "thread_id": run_id,
            "profile": body.profile,
            "url": f"/api/agent/runs/{run_id}",
            "events_url": f"/api/threads/{run_id}/events",
            "command_id": command.command_id,
        },
        status_code=202,
    )


def _plain(struct) -> dict:  # noqa: ANN001
    import msgspec

    return msgspec.to_builtins(struct)


async def _run(bus, read_model, run_id: str, principal):  # noqa: ANN001, ANN202
    query = AgentRunQuery(run_id=run_id, user_id=scope_user(principal), min_sequence=read_model.seen_position())
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_AGENT_RUN, query, AgentRunReply, TIMEOUT_S)
    if not reply.found or reply.run is None:
        raise ApiError(404, "not_found", f"No agent run {run_id!r}.")
    return reply.run


@router.get("/agent/runs")
async def list_runs(
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    limit: int = Query(50, ge=1, le=500),
) -> JSONResponse:
    """200 ``{"runs": [run without steps]}``, newest first; only the caller's while auth is on."""
    query = AgentRunsQuery(user_id=scope_user(principal), limit=limit, min_sequence=read_model.seen_position())
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_AGENT_RUNS, query, AgentRunsReply, TIMEOUT_S)
    return success(request, {"runs": [_plain(r) for r in reply.runs]})


@router.get("/agent/runs/{run_id}")
async def get_run(
    run_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, principal: PrincipalDep
) -> JSONResponse:
    """200 the run with ``steps`` (its events in order) and ``approvals``; 404 ``not_found`` (also another user's)."""
    return success(request, _plain(await _run(bus, read_model, run_id, principal)))


@router.post("/agent/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    run_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Stop the run and its running tool call. 202 ``{"run_id", "command_id"}``; 404 ``not_found``; 409
    ``run_ended``."""
    run = await _run(bus, read_model, run_id, writer)
    if run.status in ("completed", "failed", "cancelled"):
        raise ApiError(409, "run_ended", f"The run has already ended ({run.status}).")
    command = CancelAgentRun(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        thread_id=run_id,
        user_id=writer.user_id,
    )
    await commands.send(command)
    return success(request, {"run_id": run_id, "command_id": command.command_id}, status_code=202)


@router.get("/approvals")
async def list_approvals(
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    status: Literal["pending", "granted", "denied", "expired"] | None = None,
    run_id: str | None = Query(None, max_length=128),
) -> JSONResponse:
    """200 ``{"approvals": [{"approval_id", "run_id", "tool", "arguments", "reason", "status", "requested_at",
    "expires_at", "decided_by", "scope", "comment"}]}``, newest first; only the caller's while auth is on."""
    query = ApprovalsQuery(
        user_id=scope_user(principal), status=status, run_id=run_id, min_sequence=read_model.seen_position()
    )
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_APPROVALS, query, ApprovalsReply, TIMEOUT_S)
    return success(request, {"approvals": [_plain(a) for a in reply.approvals]})


async def _answer(
    approval_id: str, decision: str, body: ApprovalAnswer, request: Request, bus, read_model, commands, writer
) -> JSONResponse:  # noqa: ANN001
    query = ApprovalsQuery(user_id=scope_user(writer), approval_id=approval_id, min_sequence=read_model.seen_position())
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_APPROVALS, query, ApprovalsReply, TIMEOUT_S)
    if not reply.approvals:
        raise ApiError(404, "not_found", f"No approval {approval_id!r}.")
    approval = reply.approvals[0]
    if approval.status != "pending":
        raise ApiError(409, "approval_closed", f"The approval is already {approval.status}.")
    command = DecideApproval(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        thread_id=approval.run_id,
        approval_id=approval_id,
        decision=decision,
        scope=body.scope,
        comment=body.comment,
        user_id=approval.user_id if not auth_enabled(writer) else writer.user_id,
        channel="web" if request.headers.get("x-hermes-channel") is None else request.headers["x-hermes-channel"][:32],
    )
    await commands.send(command)
    return success(
        request, {"approval_id": approval_id, "decision": decision, "command_id": command.command_id}, status_code=202
    )


@router.post("/approvals/{approval_id}/approve", status_code=202)
async def approve(
    approval_id: str,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
    body: ApprovalAnswer | None = None,
) -> JSONResponse:
    """Approve the call (``scope`` once, or ``run``: the same call again in this run). 202; 404 ``not_found`` (also
    another user's); 409 ``approval_closed``; 403 for a guest."""
    return await _answer(approval_id, "approve", body or ApprovalAnswer(), request, bus, read_model, commands, writer)


@router.post("/approvals/{approval_id}/reject", status_code=202)
async def reject(
    approval_id: str,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
    body: ApprovalAnswer | None = None,
) -> JSONResponse:
    """Reject the call; the model is told (with the comment). 202; 404; 409; 403 as for approve."""
    return await _answer(approval_id, "reject", body or ApprovalAnswer(), request, bus, read_model, commands, writer)

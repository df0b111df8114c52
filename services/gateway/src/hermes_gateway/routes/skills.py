"""The skills library and its proposals: ``GET /api/skills`` (the library: skills with usage, commits),
``GET /api/skills/proposals[/{id}]``, ``POST /api/skills/proposals`` (a person proposes files), ``POST
/api/skills/proposals/{id}/approve|reject|rollback``, ``POST /api/skills/improve`` (analyse the recent runs now).

Nothing changes the library without a person's approval, and only a proposal that passed validation can be
approved (409 ``not_approvable`` otherwise). Only the proposal's user sees or decides it (another user gets 404, a
guest 403); who decides comes from the request's authentication."""

from __future__ import annotations

from typing import Literal

import msgspec
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr

from hermes_proto import skill_proposals as sp
from hermes_proto import subjects as subj
from hermes_proto.ids import new_id, utcnow
from hermes_proto.rpc import ask

from hermes_gateway.auth import auth_enabled, owner_id, scope_user
from hermes_gateway.deps import BusDep, CommandsDep, PrincipalDep, ReadModelDep, WriterDep
from hermes_gateway.envelope import ApiError, success

router = APIRouter(prefix="/api", tags=["skills"])
TIMEOUT_S = 5.0


class ProposalBody(BaseModel):
    """``files``: paths inside the skill's folder (``<skill>/SKILL.md``, ``<skill>/run.py``,
    ``<skill>/tests/test_run.py``) → text (null: delete)."""

    skill: StrictStr = Field(pattern=r"^[a-z0-9_-]{1,40}$")
    rationale: StrictStr = Field(min_length=1, max_length=4000)
    files: dict[StrictStr, StrictStr | None] = Field(min_length=1, max_length=sp.MAX_FILES)
    kind: Literal["new_skill", "fix_skill"] = "new_skill"
    user_id: StrictStr = Field(default="local", max_length=128)


class Decision(BaseModel):
    comment: StrictStr = Field(default="", max_length=2000)


def _plain(struct) -> dict:  # noqa: ANN001
    return msgspec.to_builtins(struct)


async def _proposals(bus, read_model, principal, **filters) -> list[sp.ProposalView]:  # noqa: ANN001
    query = sp.ProposalsQuery(user_id=scope_user(principal), min_sequence=read_model.seen_position(), **filters)
    reply = await ask(bus.nc, "The orchestrator", subj.QUERY_SKILL_PROPOSALS, query, sp.ProposalsReply, TIMEOUT_S)
    return reply.proposals


async def _one(bus, read_model, principal, proposal_id: str) -> sp.ProposalView:  # noqa: ANN001
    found = await _proposals(bus, read_model, principal, proposal_id=proposal_id)
    if not found:
        raise ApiError(404, "not_found", f"No skill proposal {proposal_id!r}.")
    return found[0]


@router.get("/skills")
async def library(request: Request, bus: BusDep, principal: PrincipalDep) -> JSONResponse:
    """200 ``{"head", "skills": [{"name", "tool", "description", "tags", "version", "uses", "success_rate",
    "mean_ms", "tokens_saved"}], "invalid", "log": [{"sha", "message", "time"}]}`` (asked of the tool service)."""
    reply = await ask(bus.nc, "The tool service", subj.QUERY_SKILLS, sp.SkillsQuery(), sp.SkillsReply, TIMEOUT_S)
    return success(request, _plain(reply))


@router.get("/skills/proposals")
async def list_proposals(
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    principal: PrincipalDep,
    status: Literal[sp.STATUSES] | None = None,  # type: ignore[valid-type]
    limit: int = Query(100, ge=1, le=500),
) -> JSONResponse:
    """200 ``{"proposals": [...]}`` newest first (without files and diffs)."""
    found = await _proposals(bus, read_model, principal, status=status, limit=limit)
    return success(request, {"proposals": [_plain(p) for p in found]})


@router.get("/skills/proposals/{proposal_id}")
async def get_proposal(
    proposal_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, principal: PrincipalDep
) -> JSONResponse:
    """200 the proposal with ``files``, ``diff``, ``findings`` and ``tests``; 404 ``not_found``."""
    return success(request, _plain(await _one(bus, read_model, principal, proposal_id)))


@router.post("/skills/proposals", status_code=202)
async def propose(body: ProposalBody, request: Request, commands: CommandsDep, writer: WriterDep) -> JSONResponse:
    """Propose a skill change; it is validated (ruff, security scan, its tests in the sandbox) and, if it passes,
    waits for an approval. 202 ``{"proposal_id", "url"}``; 400 ``invalid_files`` (a path outside the skill)."""
    problem = sp.check_files(body.skill, dict(body.files))
    if problem:
        raise ApiError(400, "invalid_files", problem)
    if any(text is not None and len(text) > sp.MAX_FILE_CHARS for text in body.files.values()):
        raise ApiError(413, "file_too_large", f"A file has more than {sp.MAX_FILE_CHARS} characters.")
    proposal_id = new_id()
    await commands.send(
        sp.ProposeSkill(
            command_id=new_id(),
            issued_at=utcnow(),
            correlation_id=request.state.request_id,
            proposal_id=proposal_id,
            skill=body.skill,
            kind=body.kind,
            rationale=body.rationale,
            files=dict(body.files),
            source="person",
            user_id=owner_id(request, body.user_id),
        )
    )
    return success(
        request, {"proposal_id": proposal_id, "url": f"/api/skills/proposals/{proposal_id}"}, status_code=202
    )


async def _decide(proposal_id: str, decision: str, body: Decision, request: Request, bus, read_model, commands, writer):  # noqa: ANN001, ANN202
    proposal = await _one(bus, read_model, writer, proposal_id)
    if proposal.status != "awaiting_approval":
        hint = "It failed validation: fix it and propose again." if proposal.status == "invalid" else ""
        raise ApiError(409, "not_approvable", f"The proposal is {proposal.status}. {hint}".strip())
    command = sp.DecideSkillProposal(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        proposal_id=proposal_id,
        decision=decision,
        comment=body.comment,
        user_id=proposal.user_id if not auth_enabled(writer) else writer.user_id,
    )
    await commands.send(command)
    return success(request, {"proposal_id": proposal_id, "decision": decision}, status_code=202)


@router.post("/skills/proposals/{proposal_id}/approve", status_code=202)
async def approve(
    proposal_id: str,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
    body: Decision | None = None,
) -> JSONResponse:
    """Approve: the tool service commits it to the library and reloads its tools. 202; 404; 409 ``not_approvable``."""
    return await _decide(proposal_id, "approve", body or Decision(), request, bus, read_model, commands, writer)


@router.post("/skills/proposals/{proposal_id}/reject", status_code=202)
async def reject(
    proposal_id: str,
    request: Request,
    bus: BusDep,
    read_model: ReadModelDep,
    commands: CommandsDep,
    writer: WriterDep,
    body: Decision | None = None,
) -> JSONResponse:
    """Reject (kept with the comment as its reason). 202; 404; 409 ``not_approvable``."""
    return await _decide(proposal_id, "reject", body or Decision(), request, bus, read_model, commands, writer)


@router.post("/skills/proposals/{proposal_id}/rollback", status_code=202)
async def rollback(
    proposal_id: str, request: Request, bus: BusDep, read_model: ReadModelDep, commands: CommandsDep, writer: WriterDep
) -> JSONResponse:
    """Revert an applied change (``git revert`` in the library, tools reloaded). 202; 404; 409 ``not_applied``."""
    proposal = await _one(bus, read_model, writer, proposal_id)
    if proposal.status != "applied":
        raise ApiError(409, "not_applied", f"The proposal is {proposal.status}: only an applied change rolls back.")
    await commands.send(
        sp.RollbackSkillChange(
            command_id=new_id(),
            issued_at=utcnow(),
            correlation_id=request.state.request_id,
            proposal_id=proposal_id,
            user_id=proposal.user_id,
        )
    )
    return success(request, {"proposal_id": proposal_id}, status_code=202)


@router.post("/skills/improve", status_code=202)
async def improve(request: Request, commands: CommandsDep, writer: WriterDep) -> JSONResponse:
    """Analyse the caller's recent agent runs now; proposals appear under ``/api/skills/proposals``. 202."""
    command = sp.ImproveSkills(
        command_id=new_id(),
        issued_at=utcnow(),
        correlation_id=request.state.request_id,
        user_id=owner_id(request, "local"),
    )
    await commands.send(command)
    return success(request, {"command_id": command.command_id}, status_code=202)

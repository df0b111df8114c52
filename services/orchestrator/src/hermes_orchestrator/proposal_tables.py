"""The skill proposals' read-model table ``skill_proposals``: one row per proposal with what was proposed, the tool
service's verdict, the person's decision and what was committed or reverted. Written by
:mod:`hermes_orchestrator.proposal_readmodel`; every value comes from an event."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class SkillProposalRow(SQLModel, table=True):
    __tablename__ = "skill_proposals"

    proposal_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    skill: str
    kind: str
    source: str
    rationale: str
    status: str = Field(index=True)
    """validating, invalid, awaiting_approval, approved, rejected, applied, failed or rolled_back."""
    files_json: str = "{}"
    evidence_json: str = "[]"
    ok: bool | None = None
    findings_json: str = "[]"
    tests_json: str = "{}"
    diff: str = ""
    base: str = ""
    commit: str | None = None
    revert_commit: str | None = None
    decided_by: str | None = None
    reason: str = ""
    error_code: str | None = None
    created_at: datetime = Field(index=True)
    updated_at: datetime

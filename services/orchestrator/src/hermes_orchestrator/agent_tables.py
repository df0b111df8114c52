"""The agent runs' read-model tables: ``agent_runs`` (one row per run, with the run's decision state as JSON so the
fold restarts from the snapshot), ``agent_steps`` (every event of a run in log order, what ``GET /api/agent/runs/<id>``
shows) and ``approvals`` (every approval with its outcome, what ``GET /api/approvals`` lists). Written by
:mod:`hermes_orchestrator.agent_readmodel`; every value comes from an event."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel


class AgentRunRow(SQLModel, table=True):
    __tablename__ = "agent_runs"

    run_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    task: str
    profile: str
    profile_reason: str = ""
    project: str = "default"
    status: str = "running"
    answer: str | None = None
    reason: str | None = None
    message: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_cents: float = 0.0
    steps: int = 0
    created_at: datetime = Field(index=True)
    updated_at: datetime
    state_json: str = "{}"
    """The run's :class:`~hermes_orchestrator.run_state.RunState` after the last applied event (msgspec JSON)."""


class AgentStepRow(SQLModel, table=True):
    __tablename__ = "agent_steps"

    event_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    position: int
    type: str
    occurred_at: datetime
    body_json: str


class ApprovalRow(SQLModel, table=True):
    __tablename__ = "approvals"

    approval_id: str = Field(primary_key=True)
    run_id: str = Field(index=True)
    user_id: str = Field(index=True)
    call_id: str
    tool: str
    arguments_json: str = "{}"
    reason: str = ""
    status: str = "pending"
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    scope: str | None = None
    comment: str = ""


AGENT_TABLES = (AgentRunRow, AgentStepRow, ApprovalRow)

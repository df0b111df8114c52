"""Request/reply contract of the agent runs' read model (the orchestrator answers, the gateway and CLI ask):
``hermes.query.agent_run``, ``hermes.query.agent_runs``, ``hermes.query.approvals``, ``hermes.query.agent_profiles``.
A query scoped to ``user_id`` sees only that user's runs and approvals (None: an operator's query, every user's)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from hermes_proto.queries import StreamSequence


class ApprovalView(msgspec.Struct, frozen=True, kw_only=True):
    """One approval: ``status`` pending, granted, denied or expired; times UTC."""

    approval_id: str
    run_id: str
    user_id: str
    call_id: str
    tool: str
    arguments: dict[str, Any] = {}
    reason: str = ""
    status: str
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    scope: str | None = None
    comment: str = ""


class AgentRunView(msgspec.Struct, frozen=True, kw_only=True):
    """One run: ``status`` running, awaiting_approval, completed, failed or cancelled; ``reason`` how it ended
    (answered, max_iterations, timeout, budget, model_failed, cancelled); ``tokens`` all turns' tokens;
    ``cost_cents``; ``steps`` its events in log order (each the event's JSON object, ``type`` tagged), only in
    a single-run reply."""

    run_id: str
    user_id: str
    task: str
    profile: str
    profile_reason: str = ""
    project: str = "default"
    status: str
    answer: str | None = None
    reason: str | None = None
    message: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_cents: float = 0.0
    created_at: datetime
    updated_at: datetime
    steps: list[dict[str, Any]] = []
    approvals: list[ApprovalView] = []


class AgentRunQuery(msgspec.Struct, frozen=True, kw_only=True):
    run_id: str
    user_id: str | None = None
    min_sequence: StreamSequence = 0


class AgentRunReply(msgspec.Struct, frozen=True, kw_only=True):
    found: bool
    run: AgentRunView | None = None


class AgentRunsQuery(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str | None = None
    limit: int = 50
    min_sequence: StreamSequence = 0


class AgentRunsReply(msgspec.Struct, frozen=True, kw_only=True):
    runs: list[AgentRunView]


class ApprovalsQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``status`` one of pending, granted, denied, expired (None: all); ``approval_id`` one of them."""

    user_id: str | None = None
    status: str | None = None
    run_id: str | None = None
    approval_id: str | None = None
    limit: int = 100
    min_sequence: StreamSequence = 0


class ApprovalsReply(msgspec.Struct, frozen=True, kw_only=True):
    approvals: list[ApprovalView]


class ProfileView(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    description: str = ""
    tools: list[str] = []
    max_iterations: int = 8
    approval_required: list[str] = []
    timeout_s: float = 300.0


class ProfilesReply(msgspec.Struct, frozen=True, kw_only=True):
    profiles: list[ProfileView]

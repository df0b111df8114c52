"""Reads of the agent runs' read model (:mod:`hermes_orchestrator.agent_tables`) into the views of
:mod:`hermes_proto.agent_queries`. Plain functions on an ORM session; no writes."""

from __future__ import annotations

import json

from sqlmodel import Session, col, select

from hermes_proto.agent_queries import AgentRunView, ApprovalView

from hermes_orchestrator.agent_tables import AgentRunRow, AgentStepRow, ApprovalRow


def approval_view(row: ApprovalRow) -> ApprovalView:
    return ApprovalView(
        approval_id=row.approval_id,
        run_id=row.run_id,
        user_id=row.user_id,
        call_id=row.call_id,
        tool=row.tool,
        arguments=json.loads(row.arguments_json or "{}"),
        reason=row.reason,
        status=row.status,
        requested_at=row.requested_at,
        expires_at=row.expires_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        scope=row.scope,
        comment=row.comment,
    )


def run_view(
    row: AgentRunRow, steps: list[dict] | None = None, approvals: list[ApprovalView] | None = None
) -> AgentRunView:
    return AgentRunView(
        run_id=row.run_id,
        user_id=row.user_id,
        task=row.task,
        profile=row.profile,
        profile_reason=row.profile_reason,
        project=row.project,
        status=row.status,
        answer=row.answer,
        reason=row.reason,
        message=row.message,
        iterations=row.iterations,
        tool_calls=row.tool_calls,
        tokens=row.tokens,
        cost_cents=row.cost_cents,
        created_at=row.created_at,
        updated_at=row.updated_at,
        steps=steps or [],
        approvals=approvals or [],
    )


def agent_run(session: Session, run_id: str, user_id: str | None) -> AgentRunView | None:
    """One run with its steps and approvals; None when unknown or (``user_id`` set) another user's."""
    row = session.get(AgentRunRow, run_id)
    if row is None or (user_id is not None and row.user_id != user_id):
        return None
    steps = session.exec(select(AgentStepRow).where(AgentStepRow.run_id == run_id).order_by(AgentStepRow.position))
    approvals = session.exec(select(ApprovalRow).where(ApprovalRow.run_id == run_id).order_by(ApprovalRow.requested_at))
    return run_view(row, [json.loads(s.body_json) for s in steps], [approval_view(a) for a in approvals])


def agent_runs(session: Session, user_id: str | None, limit: int) -> list[AgentRunView]:
    """The most recent runs first (``user_id`` set: only theirs)."""
    query = select(AgentRunRow).order_by(col(AgentRunRow.created_at).desc()).limit(max(1, min(limit, 500)))
    if user_id is not None:
        query = query.where(AgentRunRow.user_id == user_id)
    return [run_view(r) for r in session.exec(query)]


def approvals(
    session: Session,
    user_id: str | None,
    status: str | None,
    run_id: str | None,
    approval_id: str | None,
    limit: int,
) -> list[ApprovalView]:
    """Approvals, newest first, filtered by owner, status, run or id."""
    query = select(ApprovalRow).order_by(col(ApprovalRow.requested_at).desc()).limit(max(1, min(limit, 500)))
    for column, value in (
        (ApprovalRow.user_id, user_id),
        (ApprovalRow.status, status),
        (ApprovalRow.run_id, run_id),
        (ApprovalRow.approval_id, approval_id),
    ):
        if value is not None:
            query = query.where(column == value)
    return [approval_view(a) for a in session.exec(query)]

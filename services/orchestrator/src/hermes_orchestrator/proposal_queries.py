"""Answers ``hermes.query.skill_proposals`` from ``skill_proposals`` (:mod:`hermes_orchestrator.proposal_tables`),
after waiting (bounded) for a ``min_sequence`` the asker has seen. One proposal (``proposal_id``) comes with its
files, diff, findings and test results; a list without them."""

from __future__ import annotations

import asyncio
import json

from nats.aio.msg import Msg
from sqlmodel import Session, col, select

from hermes_proto import subjects
from hermes_proto.rpc import answering
from hermes_proto.skill_proposals import ProposalsQuery, ProposalsReply, ProposalView

from hermes_orchestrator.proposal_tables import SkillProposalRow
from hermes_orchestrator.queries import QueryResponder


def proposal_view(row: SkillProposalRow, full: bool) -> ProposalView:
    detail = (
        {
            "files": json.loads(row.files_json),
            "diff": row.diff,
            "findings": json.loads(row.findings_json),
            "tests": json.loads(row.tests_json),
        }
        if full
        else {}
    )
    return ProposalView(
        proposal_id=row.proposal_id,
        user_id=row.user_id,
        skill=row.skill,
        kind=row.kind,
        source=row.source,
        rationale=row.rationale,
        status=row.status,
        ok=row.ok,
        evidence=json.loads(row.evidence_json),
        commit=row.commit,
        revert_commit=row.revert_commit,
        decided_by=row.decided_by,
        reason=row.reason,
        error_code=row.error_code,
        created_at=row.created_at,
        updated_at=row.updated_at,
        **detail,
    )


def list_proposals(session: Session, q: ProposalsQuery) -> list[ProposalView]:
    query = select(SkillProposalRow).order_by(col(SkillProposalRow.created_at).desc())
    if q.user_id is not None:
        query = query.where(SkillProposalRow.user_id == q.user_id)
    if q.status is not None:
        query = query.where(SkillProposalRow.status == q.status)
    if q.proposal_id is not None:
        query = query.where(SkillProposalRow.proposal_id == q.proposal_id)
    rows = session.exec(query.limit(max(1, min(q.limit, 500))))
    return [proposal_view(r, q.proposal_id is not None) for r in rows]


class ProposalQueries:
    def __init__(self, base: QueryResponder) -> None:
        self.base = base

    async def subscribe(self) -> None:
        await self.base.nc.subscribe(
            subjects.QUERY_SKILL_PROPOSALS, queue="orchestrator", cb=answering("orchestrator", self._list)
        )

    async def _list(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, ProposalsQuery)) is None:
            return
        found = await asyncio.to_thread(self.base._read, list_proposals, q)
        await self.base._respond(msg, ProposalsReply(proposals=found))

"""The skill proposals' projection: each proposal event applied to ``skill_proposals``
(:mod:`hermes_orchestrator.proposal_tables`), the status by :func:`hermes_proto.skill_proposals.status_after`.
Idempotent (a proposal's row is keyed by its id; a status only moves forward)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from hermes_proto import skill_proposals as sp
from hermes_proto.base import Event
from hermes_proto.rowstore import RowStore, rows

from hermes_orchestrator.proposal_tables import SkillProposalRow

Proposal = rows(SkillProposalRow)
PROPOSAL_ROWS = (Proposal,)
_encoder = msgspec.json.Encoder()


def _json(value: object) -> str:
    return _encoder.encode(value).decode()


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def apply_proposal(e: Event, store: RowStore) -> None:
    row = store.get(Proposal, e.aggregate_id)
    if isinstance(e, sp.SkillProposed):
        if row is None:
            store.add(
                Proposal(
                    proposal_id=e.aggregate_id,
                    user_id=e.user_id,
                    skill=e.skill,
                    kind=e.kind,
                    source=e.source,
                    rationale=e.rationale,
                    status="validating",
                    files_json=_json(e.files),
                    evidence_json=_json(e.evidence),
                    created_at=_utc(e.occurred_at),
                    updated_at=_utc(e.occurred_at),
                )
            )
        return
    if row is None:
        return
    status = sp.status_after(row.status, e)
    if status == row.status and not isinstance(e, sp.SkillProposalFailed):
        return
    row.status, row.updated_at = status, _utc(e.occurred_at)
    match e:
        case sp.SkillProposalValidated():
            row.ok, row.findings_json, row.tests_json = e.ok, _json(e.findings), _json(e.tests)
            row.diff, row.base = e.diff, e.base
        case sp.SkillProposalApproved():
            row.decided_by, row.reason = e.by, e.comment
        case sp.SkillProposalRejected():
            row.decided_by, row.reason = e.by, e.reason
        case sp.SkillProposalApplied():
            row.commit = e.commit
        case sp.SkillProposalFailed():
            row.error_code, row.reason = e.error_code, e.message
        case sp.SkillChangeRolledBack():
            row.revert_commit = e.revert_commit

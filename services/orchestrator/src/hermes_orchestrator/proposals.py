"""Skill proposals' decisions (partition 0): a proposal is recorded (a person's or agent's ``ProposeSkill``, or the
analysis of ``ImproveSkills``), and only a person's decision on one that passed validation approves it; a rollback
is asked for only of an applied change. The tool service validates, commits and reverts
(:mod:`hermes_proto.skill_proposals`). Also the self-improvement loop: every ``interval_s`` an ``ImproveSkills``
for each user with agent runs in the window (command id derived from user and slot)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hermes_proto import skill_proposals as sp
from hermes_proto.base import Command, Event
from hermes_proto.bus import EventStore
from hermes_proto.ids import derived_id, utcnow

from hermes_orchestrator import improver
from hermes_orchestrator.agent_tables import AgentRunRow, AgentStepRow
from hermes_orchestrator.proposal_tables import SkillProposalRow

log = structlog.get_logger("hermes.orchestrator")

PROPOSALS = Counter(
    "hermes_skill_proposals_total",
    "Skill proposals by step: proposed, approved, rejected, rollback_requested, refused",
    ["step"],
)
RUNS_READ = 300
"""Agent runs one analysis reads at most (the user's newest in the window)."""


@dataclass
class ProposalState:
    proposal_id: str
    user_id: str
    skill: str
    status: str
    commit: str | None = None


def evolve_proposal(state: ProposalState | None, e: Event) -> ProposalState | None:
    if isinstance(e, sp.SkillProposed) and state is None:
        return ProposalState(e.aggregate_id, e.user_id, e.skill, "validating")
    if state is None:
        return None
    state.status = sp.status_after(state.status, e) or state.status
    if isinstance(e, sp.SkillProposalApplied):
        state.commit = e.commit
    return state


def _env(cmd: Command, proposal_id: str, name: str, now: datetime) -> dict:
    return {
        "event_id": derived_id(cmd.command_id, name),
        "aggregate_id": proposal_id,
        "occurred_at": now,
        "correlation_id": cmd.correlation_id or cmd.command_id,
        "causation_id": cmd.command_id,
    }


def decide(cmd: Command, state: ProposalState | None, now: datetime) -> tuple[list[Event], str | None]:
    """The events of a propose / decide / rollback command and, when none, why (``refused`` reason)."""
    if isinstance(cmd, sp.ProposeSkill):
        if state is not None:
            return [], "proposal_exists"
        problem = sp.check_files(cmd.skill, dict(cmd.files))
        if problem:
            return [], f"invalid_files: {problem}"
        fields = {k: getattr(cmd, k) for k in ("user_id", "skill", "kind", "rationale", "source", "evidence")}
        return [sp.SkillProposed(**_env(cmd, cmd.proposal_id, "proposed", now), files=dict(cmd.files), **fields)], None
    if state is None:
        return [], "unknown_proposal"
    if getattr(cmd, "user_id", None) != state.user_id:
        return [], "not_owner"
    if isinstance(cmd, sp.DecideSkillProposal):
        if state.status != "awaiting_approval":
            return [], f"not_awaiting_approval: {state.status}"
        env = _env(cmd, state.proposal_id, "decided", now)
        if cmd.decision == "approve":
            return [sp.SkillProposalApproved(**env, by=cmd.user_id, comment=cmd.comment)], None
        return [sp.SkillProposalRejected(**env, by=cmd.user_id, reason=cmd.comment)], None
    if isinstance(cmd, sp.RollbackSkillChange):
        if state.status != "applied" or not state.commit:
            return [], f"not_applied: {state.status}"
        env = _env(cmd, state.proposal_id, "rollback", now)
        return [sp.SkillRollbackRequested(**env, by=cmd.user_id, commit=state.commit)], None
    return [], "unknown_command"


def recent_runs(session: Session, user_id: str, since: datetime) -> list[improver.RunRecord]:
    """``user_id``'s agent runs since ``since`` with the tool calls each requested (from ``agent_steps``)."""
    runs = list(
        session.exec(
            select(AgentRunRow)
            .where(AgentRunRow.user_id == user_id, AgentRunRow.created_at >= since)
            .order_by(col(AgentRunRow.created_at).desc())
            .limit(RUNS_READ)
        )
    )
    if not runs:
        return []
    calls: dict[str, list[tuple[str, dict]]] = {}
    steps = session.exec(
        select(AgentStepRow)
        .where(col(AgentStepRow.run_id).in_([r.run_id for r in runs]), AgentStepRow.type == "tool_call_requested")
        .order_by(AgentStepRow.run_id, AgentStepRow.position)
    )
    for step in steps:
        body = json.loads(step.body_json)
        calls.setdefault(step.run_id, []).append((body.get("name", ""), body.get("arguments") or {}))
    return [improver.RunRecord(r.run_id, r.task, r.profile, r.status, tuple(calls.get(r.run_id, []))) for r in runs]


def proposed_code(session: Session) -> list[str]:
    """The ``run.py`` of every proposal not rejected or invalid (proposed again it would be a duplicate)."""
    found = []
    for row in session.exec(
        select(SkillProposalRow).where(col(SkillProposalRow.status).not_in(("rejected", "invalid", "rolled_back")))
    ):
        files = json.loads(row.files_json or "{}")
        found += [text for path, text in files.items() if path.endswith("/run.py") and text]
    return found


class ProposalHandlers:
    """``on_command`` for :data:`hermes_proto.skill_proposals.PROPOSAL_COMMANDS` (lock ``proposal:<id>``, or
    ``improve`` for the analysis)."""

    def __init__(
        self,
        states: dict[str, ProposalState],
        engine: Engine,
        lock: Callable[[str], AbstractAsyncContextManager],
        append: Callable[[list[Event]], Awaitable[None]],
        window_days: float,
    ) -> None:
        self.states, self.engine, self._lock, self._append, self.window_days = states, engine, lock, append, window_days

    def _analysis(self, user_id: str, now: datetime) -> list[improver.Proposal]:
        with Session(self.engine) as session:
            runs = recent_runs(session, user_id, now - timedelta(days=self.window_days))
            return improver.analyse(runs, proposed_code(session))

    async def on_command(self, cmd: Command) -> None:
        now = utcnow()
        if isinstance(cmd, sp.ImproveSkills):
            async with self._lock("improve"):
                found = await asyncio.to_thread(self._analysis, cmd.user_id, now)
                events: list[Event] = []
                for p in found:
                    proposal_id = derived_id("auto-skill", cmd.user_id, p.files[f"{p.name}/run.py"])[:24]
                    if proposal_id in self.states:
                        continue
                    events.append(
                        sp.SkillProposed(
                            **_env(cmd, proposal_id, f"proposed:{proposal_id}", now),
                            user_id=cmd.user_id,
                            skill=p.name,
                            rationale=p.rationale,
                            files=dict(p.files),
                            source="analysis",
                            evidence=p.evidence,
                        )
                    )
                if events:
                    await self._append(events)
                    PROPOSALS.labels("proposed").inc(len(events))
                log.info("skills_analysed", user_id=cmd.user_id, proposals=len(events))
            return
        proposal_id = cmd.proposal_id  # type: ignore[attr-defined]
        async with self._lock(f"proposal:{proposal_id}"):
            events, refused = decide(cmd, self.states.get(proposal_id), now)
            if events:
                await self._append(events)
        step = {"approve": "approved", "reject": "rejected"}.get(getattr(cmd, "decision", ""), "")
        step = step or ("proposed" if isinstance(cmd, sp.ProposeSkill) else "rollback_requested")
        PROPOSALS.labels(step if events else "refused").inc()
        log.info("skill_proposal_command", type=cmd.type_name(), proposal_id=proposal_id, refused=refused)


class Improver:
    """Sends ``ImproveSkills`` for each user with agent runs in the window every ``interval_s``."""

    def __init__(self, engine: Engine, store: EventStore, interval_s: float, window_days: float) -> None:
        self.engine, self.store, self.interval_s, self.window_days = engine, store, interval_s, window_days

    def _users(self, since: datetime) -> list[str]:
        with Session(self.engine) as session:
            query = select(AgentRunRow.user_id).where(AgentRunRow.created_at >= since).distinct()
            return sorted(set(session.exec(query)))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
                return
            except TimeoutError:
                pass
            try:
                now = utcnow()
                slot = str(int(now.timestamp() // self.interval_s))
                for user in await asyncio.to_thread(self._users, now - timedelta(days=self.window_days)):
                    await self.store.send(
                        sp.ImproveSkills(command_id=derived_id("improve", user, slot), issued_at=now, user_id=user)
                    )
            except Exception as exc:  # the loop must never stop the service
                log.warning("improver_failed", error=repr(exc))

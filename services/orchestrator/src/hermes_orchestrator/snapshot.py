"""The decision state read back from the read model: the snapshot the in-memory fold starts from.

The read model at position P holds exactly what ``reduce(evolve, events ≤ P, None)`` holds for every thread
(tests/unit/test_orchestrator_state.py checks it event by event), so the orchestrator starts from these rows and folds
the log after P instead of replaying it all. Every function takes an open ``sqlmodel.Session``; nothing writes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from sqlmodel import Session, col, select

from hermes_proto import events as ev
from hermes_proto import project_memory as pm
from hermes_proto import threads
from hermes_proto.agents import AGENT_KIND

from hermes_orchestrator.agent_readmodel import load_run_state
from hermes_orchestrator.agent_tables import AgentRunRow
from hermes_orchestrator.memory_readmodel import load_entry
from hermes_orchestrator.memory_tables import ProjectMemoryRow
from hermes_orchestrator.proposal_tables import SkillProposalRow
from hermes_orchestrator.schedule_readmodel import load_state as load_schedule_state
from hermes_orchestrator.schedule_state import ScheduleState
from hermes_orchestrator.schedule_tables import ScheduleRow
from hermes_orchestrator.state import JobState, KnownPreference, QuestionState, StepState, ThreadState
from hermes_orchestrator.tables import JobRow, PreferenceRow, QuestionRow, SettingRow, StepRow, ThreadRow

_JOB_COLUMNS = (
    JobRow.thread_id,
    JobRow.job_id,
    JobRow.kind,
    JobRow.status,
    JobRow.step_id,
    JobRow.text,
    JobRow.closed_by,
    JobRow.priority,
    JobRow.queued_at,
    JobRow.deadline,
)


def _utc(ts: datetime | None) -> datetime | None:
    """A stored time as aware UTC (SQLite may give it back naive)."""
    if ts is None:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def _thread(row: ThreadRow) -> ThreadState:
    return ThreadState(
        thread_id=row.thread_id,
        idea=row.idea,
        status=row.status,
        correlation_id=row.correlation_id,
        max_questions=row.max_questions,
        draft1=row.draft1,
        draft2=row.draft2,
        final_draft_number=row.final_draft_number,
        project=row.project,
        private=row.private,
        priority=row.priority,
        kind=row.kind,
        assumptions=msgspec.json.decode(row.assumptions_json, type=list[ev.Assumption]),
        assumed=msgspec.json.decode(row.assumed_json, type=list[ev.Assumption]),
        answer_timeout_s=row.answer_timeout_s,
        answer_deadline=_utc(row.answer_deadline),
        workflow_deadline=_utc(row.workflow_deadline),
        idea_type=row.idea_type,
    )


def _job(
    thread_id,
    job_id,
    kind,
    status,
    step_id,
    text,
    closed_by,
    priority,
    queued_at,  # noqa: ANN001
    deadline,
) -> JobState:
    keep = text if kind == threads.STEP and status == "completed" else None  # as the fold keeps it
    return JobState(job_id, kind, status, step_id, keep, closed_by, priority, _utc(queued_at), _utc(deadline))


def _fill(
    states: dict[str, ThreadState], jobs: Iterable, questions: Iterable[QuestionRow], steps: Iterable[StepRow]
) -> None:
    for record in jobs:
        state = states.get(record[0])
        if state is not None:
            state.jobs[record[1]] = _job(*record)
    for q in questions:
        state = states.get(q.thread_id)
        if state is not None:
            state.questions.append(QuestionState(q.question_id, q.text, q.answer))
    for st in steps:
        state = states.get(st.thread_id)
        if state is not None:
            state.steps[st.step_id] = StepState(
                msgspec.json.decode(st.step_json, type=ev.WorkflowStep), st.job_id, st.status
            )


def _runs(session: Session, states: dict[str, ThreadState]) -> None:
    """The agent runs' own state, stored as JSON by the projection (:mod:`hermes_orchestrator.agent_readmodel`)."""
    ids = [t for t, s in states.items() if s.kind == AGENT_KIND]
    if not ids:
        return
    for row in session.exec(select(AgentRunRow).where(col(AgentRunRow.run_id).in_(ids))):
        states[row.run_id].run = load_run_state(row.state_json)


def load_state(session: Session, thread_id: str) -> ThreadState | None:
    """The decision state of one thread, or None when the thread is unknown."""
    row = session.get(ThreadRow, thread_id)
    if row is None:
        return None
    states = {thread_id: _thread(row)}
    _fill(
        states,
        session.exec(
            select(*_JOB_COLUMNS).where(JobRow.thread_id == thread_id).order_by(JobRow.queued_at, JobRow.job_id)
        ),
        session.exec(select(QuestionRow).where(QuestionRow.thread_id == thread_id).order_by(QuestionRow.position)),
        session.exec(select(StepRow).where(StepRow.thread_id == thread_id).order_by(StepRow.position)),
    )
    _runs(session, states)
    return states[thread_id]


@dataclass
class Snapshot:
    """Everything the fold starts from: the open threads' states, the ids of the ended ones (read back one at a
    time when a decision needs them), every learned preference and every changed setting."""

    open: dict[str, ThreadState]
    closed: set[str]
    preferences: list[KnownPreference]
    settings: dict[str, str]
    schedules: dict[str, ScheduleState] = field(default_factory=dict)
    memory: dict[str, pm.EntryState] = field(default_factory=dict)
    proposals: dict = field(default_factory=dict)
    """Skill proposal id → :class:`hermes_orchestrator.proposals.ProposalState`."""


def load(session: Session) -> Snapshot:
    """Read the snapshot in a few queries (no per-thread query)."""
    open_ = {
        r.thread_id: _thread(r)
        for r in session.exec(select(ThreadRow).where(col(ThreadRow.status).not_in(threads.FINAL_STATUSES)))
    }
    closed = set(session.exec(select(ThreadRow.thread_id).where(col(ThreadRow.status).in_(threads.FINAL_STATUSES))))
    open_threads = select(ThreadRow.thread_id).where(col(ThreadRow.status).not_in(threads.FINAL_STATUSES))
    _fill(
        open_,
        session.exec(
            select(*_JOB_COLUMNS)
            .where(col(JobRow.thread_id).in_(open_threads))
            .order_by(JobRow.queued_at, JobRow.job_id)
        ),
        session.exec(
            select(QuestionRow)
            .where(col(QuestionRow.thread_id).in_(open_threads))
            .order_by(QuestionRow.thread_id, QuestionRow.position)
        ),
        session.exec(
            select(StepRow)
            .where(col(StepRow.thread_id).in_(open_threads))
            .order_by(StepRow.thread_id, StepRow.position)
        ),
    )
    _runs(session, open_)
    return Snapshot(
        open=open_,
        closed=closed,
        preferences=[
            KnownPreference(
                p.preference_id,
                p.user_id,
                p.category,
                p.key,
                p.value,
                p.confidence,
                _utc(p.expires_at),
                scope=p.scope,
                wording=p.wording,
            )
            for p in session.exec(select(PreferenceRow))
        ],
        settings={s.key: s.value for s in session.exec(select(SettingRow))},
        schedules=_schedules(session),
        proposals=_proposals(session),
        memory={
            row.entry_id: entry
            for row in session.exec(select(ProjectMemoryRow))
            if (entry := load_entry(row.state_json)) is not None
        },
    )


def _proposals(session: Session) -> dict:
    from hermes_orchestrator.proposals import ProposalState  # proposals imports the fold's neighbours

    return {
        r.proposal_id: ProposalState(r.proposal_id, r.user_id, r.skill, r.status, r.commit)
        for r in session.exec(select(SkillProposalRow))
    }


def _schedules(session: Session) -> dict[str, ScheduleState]:
    """Every schedule not deleted, or deleted with a run still going."""
    found: dict[str, ScheduleState] = {}
    for row in session.exec(select(ScheduleRow)):
        state = load_schedule_state(row.state_json)
        if state is not None and (state.status != "deleted" or state.running):
            found[row.schedule_id] = state
    return found

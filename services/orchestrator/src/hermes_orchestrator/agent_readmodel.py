"""The agent runs' projection: each agent event (and each job event of a run's turns) applied to the rows of
:mod:`hermes_orchestrator.agent_tables`, registered on :func:`hermes_orchestrator.readmodel.apply`. The run's decision
state is folded here with the same :func:`~hermes_orchestrator.run_state.evolve_run` the in-memory fold uses and
stored as JSON, so a restarted orchestrator resumes every open run from the snapshot. Called by
:func:`hermes_orchestrator.readmodel.apply_events` for the events of threads of kind ``agent``."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from hermes_proto import agents as ag
from hermes_proto import events as ev
from hermes_proto.base import Event
from hermes_proto.rowstore import RowStore, rows

from hermes_orchestrator.agent_tables import AgentRunRow, AgentStepRow, ApprovalRow
from hermes_orchestrator.run_state import RunState, evolve_run, run_started

Run = rows(AgentRunRow)
Step = rows(AgentStepRow)
Approval = rows(ApprovalRow)
AGENT_ROWS = (Run, Step, Approval)

STEP_EVENTS = (*ag.AGENT_EVENTS, ev.ExecutionStarted, ev.ExecutionFailed, ev.JobDeferred, ev.BackendSelected)
"""What ``agent_steps`` keeps of a run: its own events and what happened to its turns' model calls."""
RUN_EVENTS = (*STEP_EVENTS, ev.JobQueued, ev.ExecutionCompleted, ev.CostRecorded)
"""Every event this projection applies (to the runs' rows only)."""

_encoder = msgspec.json.Encoder()


def _utc(ts: datetime) -> datetime:
    return ts.astimezone(UTC)


def load_run_state(state_json: str) -> RunState | None:
    """The run state stored in ``agent_runs.state_json`` (None: none stored)."""
    if not state_json or state_json == "{}":
        return None
    return msgspec.json.decode(state_json, type=RunState)


def dump_run_state(run: RunState) -> str:
    return _encoder.encode(run).decode()


def apply_agent(e: Event, store: RowStore) -> None:
    """Apply one event of an agent run (a no-op for any other thread: it has no ``agent_runs`` row)."""
    if isinstance(e, ag.AgentRunStarted):
        _started(e, store)
        return
    row = store.get(Run, e.aggregate_id)
    if row is None:
        return
    run = load_run_state(row.state_json)
    if run is not None:
        evolve_run(run, e)
        row.state_json = dump_run_state(run)
        row.iterations, row.tool_calls, row.tokens = run.iteration, run.tool_call_count, run.tokens
        row.cost_cents = round(run.cost_cents, 6)
    row.updated_at = _utc(e.occurred_at)
    match e:
        case ag.ApprovalRequested():
            row.status = "awaiting_approval"
            store.insert_absent(
                Approval(
                    approval_id=e.approval_id,
                    run_id=e.aggregate_id,
                    user_id=e.user_id,
                    call_id=e.call_id,
                    tool=e.name,
                    arguments_json=_encoder.encode(e.arguments).decode(),
                    reason=e.reason,
                    requested_at=_utc(e.occurred_at),
                    expires_at=_utc(e.expires_at),
                )
            )
        case ag.ApprovalGranted() | ag.ApprovalDenied() | ag.ApprovalExpired():
            approval = store.get(Approval, e.approval_id)
            if approval is not None and approval.status == "pending":
                approval.status = {ag.ApprovalGranted: "granted", ag.ApprovalDenied: "denied"}.get(type(e), "expired")
                approval.decided_at = _utc(e.occurred_at)
                approval.decided_by = getattr(e, "by", None)
                approval.comment = getattr(e, "comment", "")
                approval.scope = getattr(e, "scope", None)
            if run is not None and not run.ended:
                row.status = run.status
        case ag.AgentRunCompleted():
            row.status, row.answer, row.reason = "completed", e.answer, "answered"
        case ag.AgentRunFailed():
            row.status, row.reason, row.message, row.answer = "failed", e.reason, e.message, e.partial or None
        case ag.AgentRunCancelled():
            row.status, row.reason, row.message = "cancelled", "cancelled", f"cancelled by {e.by}"
    if isinstance(e, STEP_EVENTS):
        _step(e, store, row)


def _started(e: ag.AgentRunStarted, store: RowStore) -> None:
    run = run_started(e)
    row = Run(
        run_id=e.aggregate_id,
        user_id=e.user_id,
        task=e.task,
        profile=e.profile,
        profile_reason=e.profile_reason,
        project=e.project,
        created_at=_utc(e.occurred_at),
        updated_at=_utc(e.occurred_at),
        state_json=dump_run_state(run),
    )
    if store.insert_absent(row):
        _step(e, store, row)


def _step(e: Event, store: RowStore, row: AgentRunRow) -> None:
    added = store.insert_absent(
        Step(
            event_id=e.event_id,
            run_id=e.aggregate_id,
            position=row.steps,
            type=e.type_name(),
            occurred_at=_utc(e.occurred_at),
            body_json=_encoder.encode(e).decode(),
        )
    )
    if added:
        row.steps += 1

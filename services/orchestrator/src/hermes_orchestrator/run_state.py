"""An agent run's decision state (a thread of kind ``agent``) and its fold over the run's events.

:func:`evolve_run` is called by :func:`hermes_orchestrator.state.evolve` for the agent events and for the job events
of a run's turns; like it, it changes the state in place and does no I/O. The transcript (``messages``) is what the
next model turn is sent: the system prompt, the task, then per turn the assistant's text with its tool calls and one
``tool`` message per call (its output wrapped as untrusted data, :func:`hermes_proto.tools.untrusted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from hermes_proto import agents as ag
from hermes_proto import events as ev
from hermes_proto.base import ChatMessage, Event
from hermes_proto.tools import ToolSpec, canonical_arguments, untrusted

CALL_OPEN = ("requested", "awaiting_approval", "dispatched", "running")
RUN_RUNNING = "running"
RUN_AWAITING_APPROVAL = "awaiting_approval"
RUN_FINAL = ("completed", "failed", "cancelled")


@dataclass
class CallState:
    """One tool call: ``status`` requested → awaiting_approval → dispatched → running → completed | failed."""

    call_id: str
    name: str
    arguments: dict
    iteration: int
    status: str = "requested"
    read_only: bool = False
    approval_id: str | None = None
    result: str | None = None


@dataclass
class ApprovalState:
    approval_id: str
    call_id: str
    binding: str
    expires_at: datetime
    user_id: str
    workspace_state: str = ""
    status: str = "pending"
    requested_at: datetime | None = None


@dataclass
class RunState:
    """What the run's decisions need: its limits (from ``AgentRunStarted``), the transcript, the current turn, its
    calls and approvals, what it used (tokens, cost in cents) and how it ended."""

    task: str
    profile: str
    user_id: str
    project: str
    tools: list[str]
    approval_required: list[str]
    max_iterations: int
    deadline: datetime
    max_cost_cents: float | None
    max_tokens_total: int | None
    network: bool
    status: str = RUN_RUNNING
    messages: list[ChatMessage] = field(default_factory=list)
    specs: dict[str, ToolSpec] = field(default_factory=dict)
    iteration: int = 0
    turn_job: str | None = None
    turn_calls: list[str] = field(default_factory=list)
    calls: dict[str, CallState] = field(default_factory=dict)
    approvals: dict[str, ApprovalState] = field(default_factory=dict)
    approved_for_run: set[str] = field(default_factory=set)
    """``name + canonical arguments`` of calls approved with scope ``run``: the same call again is not asked."""
    known_domains: set[str] = field(default_factory=set)
    tokens: int = 0
    cost_cents: float = 0.0
    last_text: str = ""
    tool_call_count: int = 0
    turn_settings: dict = field(default_factory=dict)
    """What every turn's job asks for, as turn 1 asked: max_tokens, temperature, criteria, backend, model."""

    def call_key(self, name: str, arguments: dict) -> str:
        return f"{name}\x00{canonical_arguments(arguments)}"

    def turn_closed(self) -> bool:
        """Every call of the current turn has an outcome."""
        return all(self.calls[c].status not in CALL_OPEN for c in self.turn_calls if c in self.calls)

    @property
    def ended(self) -> bool:
        return self.status in RUN_FINAL


def run_started(e: ag.AgentRunStarted) -> RunState:
    return RunState(
        task=e.task,
        profile=e.profile,
        user_id=e.user_id,
        project=e.project,
        tools=list(e.tools),
        approval_required=list(e.approval_required),
        max_iterations=e.max_iterations,
        deadline=e.occurred_at + timedelta(seconds=e.timeout_s),
        max_cost_cents=e.max_cost_cents,
        max_tokens_total=e.max_tokens_total,
        network=e.network,
    )


def _domain(arguments: dict) -> str | None:
    url = arguments.get("url")
    return (urlsplit(url).hostname or None) if isinstance(url, str) else None


def evolve_run(run: RunState, event: Event) -> None:
    """Apply one event of the run (agent events, its turns' ``JobQueued``/``ExecutionCompleted``, ``CostRecorded``)."""
    match event:
        case ev.JobQueued(kind=ag.AGENT_TURN):
            run.iteration += 1
            run.turn_job = event.job_id
            run.turn_calls = []
            run.messages = list(event.messages)
            run.specs = {spec.name: spec for spec in event.tools}
            if not run.turn_settings:
                run.turn_settings = {
                    "max_tokens": event.max_tokens,
                    "temperature": event.temperature,
                    "criteria": event.criteria,
                    "backend": event.backend,
                    "model": event.model,
                }
        case ev.ExecutionCompleted() if event.job_id == run.turn_job:
            run.tokens += event.prompt_tokens + event.completion_tokens
        case ev.CostRecorded():
            run.cost_cents += event.cost_cents
        case ag.ModelTurnCompleted():
            run.last_text = event.text
            run.turn_calls = [c.call_id for c in event.tool_calls]
            run.messages.append(ChatMessage(role="assistant", content=event.text, tool_calls=list(event.tool_calls)))
        case ag.ToolCallRequested():
            run.calls.setdefault(
                event.call_id,
                CallState(event.call_id, event.name, dict(event.arguments), event.iteration, read_only=event.read_only),
            )
            run.tool_call_count += 1
        case ag.ApprovalRequested():
            run.approvals.setdefault(
                event.approval_id,
                ApprovalState(
                    event.approval_id,
                    event.call_id,
                    event.binding,
                    event.expires_at,
                    event.user_id,
                    event.workspace_state,
                    requested_at=event.occurred_at,
                ),
            )
            _call_moves(run, event.call_id, "awaiting_approval", approval_id=event.approval_id)
            run.status = RUN_AWAITING_APPROVAL if not run.ended else run.status
        case ag.ApprovalGranted() | ag.ApprovalDenied() | ag.ApprovalExpired():
            approval = run.approvals.get(event.approval_id)
            if approval is not None and approval.status == "pending":
                approval.status = {
                    ag.ApprovalGranted: "granted",
                    ag.ApprovalDenied: "denied",
                    ag.ApprovalExpired: "expired",
                }[type(event)]
                call = run.calls.get(approval.call_id)
                if isinstance(event, ag.ApprovalGranted) and call is not None:
                    if event.scope == ag.APPROVE_FOR_RUN:
                        run.approved_for_run.add(run.call_key(call.name, call.arguments))
                    if (domain := _domain(call.arguments)) is not None:
                        run.known_domains.add(domain)
            if not run.ended and not any(a.status == "pending" for a in run.approvals.values()):
                run.status = RUN_RUNNING
        case ag.ToolCallDispatched():
            _call_moves(run, event.call_id, "dispatched")
        case ag.ToolCallStarted():
            _call_moves(run, event.call_id, "running")
        case ag.ToolCallCompleted() | ag.ToolCallFailed():
            call = run.calls.get(event.call_id)
            if call is not None and call.status in CALL_OPEN:
                if isinstance(event, ag.ToolCallCompleted):
                    call.status = "completed"
                    call.result = event.output
                else:
                    call.status = "failed"
                    call.result = f"error {event.error_code}: {event.message}"
                run.messages.append(
                    ChatMessage(
                        role="tool",
                        content=untrusted(call.name, call.result),
                        tool_call_id=call.call_id,
                        name=call.name,
                    )
                )
        case ag.AgentRunCompleted():
            run.status = "completed"
        case ag.AgentRunFailed():
            run.status = "failed"
        case ag.AgentRunCancelled():
            run.status = "cancelled"


def _call_moves(run: RunState, call_id: str, status: str, approval_id: str | None = None) -> None:
    call = run.calls.get(call_id)
    if call is None or call.status not in CALL_OPEN:
        return
    order = CALL_OPEN.index
    if order(status) >= order(call.status):
        call.status = status
    if approval_id is not None:
        call.approval_id = approval_id

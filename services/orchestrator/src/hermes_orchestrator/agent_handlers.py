"""The orchestrator's handlers for agent runs: the commands (start, approve/reject, expire, cancel) and the reactions
(a turn answered, a tool call closed). Each looks up what the pure decision needs (the profile, the tool registry,
the permission rules, the workspace's state) and calls :mod:`hermes_orchestrator.agent`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog
from nats.aio.client import Client as NATS
from prometheus_client import Counter, Histogram
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from hermes_proto import agents as ag
from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.events import ExecutionCompleted
from hermes_proto.permissions import Rule
from hermes_proto.rpc import BUS_ERRORS, BusUnavailable, Refused, ask
from hermes_proto.tools import ToolSpec, ToolsQuery, ToolsReply, WorkspaceQuery, WorkspaceReply

from hermes_orchestrator import agent
from hermes_orchestrator.permissions_file import PermissionsFile
from hermes_orchestrator.profiles import AgentProfile, granted_tools, load_profiles, pick_profile, profile_rules
from hermes_orchestrator.state import ThreadState

log = structlog.get_logger("hermes.orchestrator")

AGENT_RUNS = Counter(
    "hermes_agent_runs_total", "Agent runs by outcome (started, completed, failed, cancelled)", ["outcome"]
)
APPROVALS = Counter("hermes_approvals_total", "Approvals by outcome (requested, granted, denied, expired)", ["outcome"])
APPROVAL_WAIT = Histogram(
    "hermes_approval_wait_seconds",
    "Seconds from an approval's request to its answer or expiry",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
TOOL_DECISIONS = Counter("hermes_tool_call_decisions_total", "Tool calls by permission decision", ["decision"])


class ToolClient:
    """Asks the tool service (core NATS request/reply): the registry and a workspace's state hash."""

    def __init__(self, nc: NATS, timeout_s: float = 3.0, registry_wait_s: float = 30.0) -> None:
        self.nc = nc
        self.timeout_s = timeout_s
        self.registry_wait_s = registry_wait_s

    async def tools(self) -> list[ToolSpec]:
        """The registry, asked again (exponential backoff) for up to ``registry_wait_s`` seconds while the tool
        service does not answer (it may be starting); then empty, logged: the run starts without tools and says so
        (``AgentRunStarted.tools``)."""
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception_type((BusUnavailable, Refused, *BUS_ERRORS)),
                wait=wait_exponential(multiplier=0.25, max=2.0),
                stop=stop_after_delay(self.registry_wait_s),
                reraise=True,
            ):
                with attempt:
                    reply = await ask(
                        self.nc, "The tool service", subjects.QUERY_TOOLS, ToolsQuery(), ToolsReply, self.timeout_s
                    )
        except (BusUnavailable, Refused, *BUS_ERRORS) as exc:
            log.warning("tool_registry_unavailable", error=repr(exc))
            return []
        return reply.tools

    async def workspace_state(self, project: str) -> str:
        """The workspace's state hash ("" when the tool service does not answer: the approval then binds to the
        call alone)."""
        try:
            reply = await ask(
                self.nc,
                "The tool service",
                subjects.QUERY_WORKSPACE,
                WorkspaceQuery(project=project),
                WorkspaceReply,
                self.timeout_s,
            )
        except (BusUnavailable, Refused, *BUS_ERRORS) as exc:
            log.warning("workspace_state_unavailable", project=project, error=repr(exc))
            return ""
        return reply.state


@dataclass
class AgentDeps:
    """``home``: where ``agents/*.toml`` are; ``permissions``: ``$HERMES_HOME/permissions.toml``;
    ``approval_timeout_s``: ``HERMES_APPROVAL_TIMEOUT_SECONDS`` (default 900)."""

    home: Path
    permissions: PermissionsFile
    tools: ToolClient
    approval_timeout_s: float = 900.0

    def profiles(self) -> dict[str, AgentProfile]:
        return load_profiles(self.home)

    def rules(self, run_user: str, project: str, profile: AgentProfile | None) -> list[Rule]:
        ruleset, _ = self.permissions.read()
        rules = ruleset.for_call(run_user, project)
        if profile is not None:
            rules += profile_rules(profile)
        return rules


class UnknownProfile(ValueError):
    """``StartAgentRun.profile`` names no profile."""


def choose_profile(cmd: ag.StartAgentRun, profiles: dict[str, AgentProfile]) -> tuple[AgentProfile, str]:
    """The profile the command names, or one picked from the task's type (with the reason). Raises
    :class:`UnknownProfile`."""
    if cmd.profile is not None:
        if cmd.profile not in profiles:
            raise UnknownProfile(f"no agent profile {cmd.profile!r} (known: {', '.join(sorted(profiles))})")
        return profiles[cmd.profile], "named by the user"
    return pick_profile(cmd.task, profiles)


async def start_run(cmd: ag.StartAgentRun, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    if state is not None or deps.agents is None:
        return []
    profiles = deps.agents.profiles()
    try:
        profile, reason = choose_profile(cmd, profiles)
    except UnknownProfile as exc:  # the gateway checks first; a producer's command fails the run visibly
        profile, reason = profiles.get("fileops") or next(iter(profiles.values())), str(exc)
        log.warning("agent_profile_unknown", run_id=cmd.thread_id, error=str(exc))
    tools = granted_tools(profile, await deps.agents.tools.tools())
    from hermes_orchestrator.handlers import harness  # the same harness as every other turn

    turn = await harness(deps, cmd.user_id, cmd.task, cmd.thread_id, cmd.project)
    events = agent.decide_start(state, cmd, profile, reason, tools, now, turn, deps.limits.current().job_timeout_s)
    if events:
        AGENT_RUNS.labels("started").inc()
        log.info("agent_run_started", run_id=cmd.thread_id, profile=profile.name, tools=[t.name for t in tools])
    return events


def _profile_of(deps, state: ThreadState) -> AgentProfile | None:  # noqa: ANN001
    return deps.agents.profiles().get(state.run.profile) if state.run is not None else None


async def turn_completed(e: ExecutionCompleted, state: ThreadState, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    run = state.run
    if run is None or deps.agents is None:
        return []
    rules = deps.agents.rules(run.user_id, run.project, _profile_of(deps, state))
    needs_state = bool(e.tool_calls)
    workspace = await deps.agents.tools.workspace_state(run.project) if needs_state else ""
    events = agent.react_turn_completed(state, e, rules, now, deps.agents.approval_timeout_s, workspace)
    _count(events)
    return events


async def call_closed(e: Event, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    if state is None or state.run is None:
        return []
    events = agent.react_call_closed(state, e, now, deps.limits.current().job_timeout_s)  # type: ignore[arg-type]
    _count(events)
    return events


async def decide_approval(cmd: ag.DecideApproval, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    events = agent.decide_approval(state, cmd, now)
    _count(events, state)
    return events


async def expire_approval(cmd: ag.ExpireApproval, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    events = agent.decide_expire_approval(state, cmd, now)
    _count(events, state)
    return events


async def expire_run(cmd: ag.ExpireAgentRun, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    events = agent.decide_expire_run(state, cmd, now)
    _count(events)
    return events


async def cancel_run(cmd: ag.CancelAgentRun, state: ThreadState | None, deps, now: datetime) -> list[Event]:  # noqa: ANN001
    events = agent.decide_cancel_run(state, cmd, now)
    _count(events)
    return events


def _count(events: list[Event], state: ThreadState | None = None) -> None:
    for e in events:
        match e:
            case ag.ToolCallRequested():
                TOOL_DECISIONS.labels(e.decision).inc()
            case ag.ApprovalRequested():
                APPROVALS.labels("requested").inc()
            case ag.ApprovalGranted() | ag.ApprovalDenied() | ag.ApprovalExpired():
                outcome = {ag.ApprovalGranted: "granted", ag.ApprovalDenied: "denied"}.get(type(e), "expired")
                APPROVALS.labels(outcome).inc()
                approval = state.run.approvals.get(e.approval_id) if state is not None and state.run else None
                if approval is not None and approval.requested_at is not None:
                    APPROVAL_WAIT.observe(max(0.0, (e.occurred_at - approval.requested_at).total_seconds()))
            case ag.AgentRunCompleted():
                AGENT_RUNS.labels("completed").inc()
            case ag.AgentRunFailed():
                AGENT_RUNS.labels("failed").inc()
            case ag.AgentRunCancelled():
                AGENT_RUNS.labels("cancelled").inc()

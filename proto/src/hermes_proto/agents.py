"""Agent runs: the events and commands of a run (a thread of kind ``agent``, so one run is replayed, watched and
cancelled like any thread: subjects ``hermes.evt.thread.<run_id>.<event_type>``).

The loop: :class:`AgentRunStarted` → a model turn (a ``JobQueued`` of kind ``agent_turn`` carrying the granted
tools) → :class:`ModelTurnCompleted` with the model's tool calls → per call a :class:`ToolCallRequested` with the
permission decision (allow, ask, deny) → for ``ask`` an :class:`ApprovalRequested` that only a person answers
(:class:`ApprovalGranted`, :class:`ApprovalDenied`, or :class:`ApprovalExpired` after the approval timeout) →
:class:`ToolCallDispatched` (the only event the tool service executes) → :class:`ToolCallStarted` and
:class:`ToolCallCompleted` / :class:`ToolCallFailed` → the next turn with the results as untrusted data → until the
model answers without tool calls (:class:`AgentRunCompleted`) or a limit ends it (:class:`AgentRunFailed`), or a
person stops it (:class:`AgentRunCancelled`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.tools import ToolCall

ALLOW = "allow"
ASK = "ask"
DENY = "deny"
DECISIONS = (ALLOW, ASK, DENY)
APPROVE_ONCE = "once"
APPROVE_FOR_RUN = "run"
APPROVAL_SCOPES = (APPROVE_ONCE, APPROVE_FOR_RUN)
AGENT_KIND = "agent"
"""``ThreadOpened.kind`` of an agent run."""
AGENT_TURN = "agent_turn"
"""``JobQueued.kind`` of one model turn of a run (also :data:`hermes_proto.threads.AGENT_TURN`, a session turn)."""

RUN_ENDINGS = ("answered", "max_iterations", "timeout", "budget", "model_failed", "cancelled")
TOOL_ERRORS = (
    "denied",
    "approval_denied",
    "approval_expired",
    "interrupted",
    "sandbox_unavailable",
    "unknown_tool",
    "invalid_arguments",
    "workspace_changed",
    "timeout",
    "tool_error",
)
"""``ToolCallFailed.error_code`` values Hermes itself sets (a tool may report others, e.g. ``http_404``)."""


class AgentRunStarted(Event, frozen=True, kw_only=True):
    """A run of ``profile`` on ``task`` began (after its ``ThreadOpened``). ``profile_reason`` says why that
    profile (named by the user, or picked from the task's type); ``tools``: the names granted (MCP tools as
    ``<server>__<tool>``); ``max_iterations`` bounds model turns; ``timeout_s`` the run's wall time (seconds);
    ``max_cost_cents`` its cost (cents, None: the router's budgets only); ``max_tokens_total`` the tokens of all
    its turns (prompt + completion)."""

    task: str
    profile: str
    profile_reason: str = ""
    project: str = "default"
    user_id: str = "local"
    tools: list[str] = []
    approval_required: list[str] = []
    max_iterations: int = 8
    timeout_s: float = 600.0
    max_cost_cents: float | None = None
    max_tokens_total: int | None = None
    network: bool = False
    """Whether the profile grants its ``shell``/``python`` calls network access (never by default)."""


class ModelTurnCompleted(Event, frozen=True, kw_only=True):
    """Turn ``iteration`` (1-based) of the run answered: its ``text`` and the ``tool_calls`` it asked for (as the
    provider returned them). No tool calls: ``text`` is the run's answer."""

    job_id: str
    iteration: int
    text: str = ""
    tool_calls: list[ToolCall] = []
    prompt_tokens: int = 0
    completion_tokens: int = 0


class ToolCallRequested(Event, frozen=True, kw_only=True):
    """The model asked for ``name(arguments)``; ``decision`` is what the permission rules said (``allow``, ``ask``,
    ``deny``), ``rule`` the rule that decided (None: a default), ``reason`` in words."""

    call_id: str
    job_id: str
    iteration: int
    name: str
    arguments: dict[str, Any] = {}
    decision: str
    rule: str | None = None
    reason: str = ""
    read_only: bool = False


class ApprovalRequested(Event, frozen=True, kw_only=True):
    """A person must approve call ``call_id`` before it runs. ``binding`` = :func:`hermes_proto.tools.call_binding`
    of (tool, arguments, ``workspace_state``): a grant applies to exactly this call on this workspace;
    ``expires_at`` (UTC): unanswered by then it is denied. ``user_id`` owns it: only they may answer."""

    approval_id: str
    call_id: str
    name: str
    arguments: dict[str, Any] = {}
    binding: str
    workspace_state: str = ""
    user_id: str = "local"
    reason: str = ""
    expires_at: datetime


class ApprovalGranted(Event, frozen=True, kw_only=True):
    """``by`` (a user id) approved ``approval_id``; ``scope`` ``once`` (this call) or ``run`` (also later calls of the
    same tool with the same arguments in this run); ``channel`` the surface it came from (web, cli, telegram)."""

    approval_id: str
    call_id: str
    binding: str
    scope: str = APPROVE_ONCE
    by: str
    channel: str = "api"
    comment: str = ""


class ApprovalDenied(Event, frozen=True, kw_only=True):
    """``by`` rejected ``approval_id``; the model is told, with ``comment``."""

    approval_id: str
    call_id: str
    by: str
    channel: str = "api"
    comment: str = ""


class ApprovalExpired(Event, frozen=True, kw_only=True):
    """Nobody answered ``approval_id`` in time: a denial (``HERMES_APPROVAL_TIMEOUT_SECONDS``)."""

    approval_id: str
    call_id: str


class ToolCallDispatched(Event, frozen=True, kw_only=True):
    """Call ``call_id`` may run: allowed by a rule or approved (``approval_id``). The tool service executes only
    these (the bus lets only the orchestrator append them). ``project`` names the workspace; ``network``: the
    sandbox may reach the network; ``workspace_state``: for an approved call, the state the approval saw (the tool
    service refuses the call when the workspace changed since)."""

    call_id: str
    name: str
    arguments: dict[str, Any] = {}
    project: str = "default"
    user_id: str = "local"
    network: bool = False
    read_only: bool = False
    approval_id: str | None = None
    workspace_state: str = ""


class ToolCallStarted(Event, frozen=True, kw_only=True):
    """The tool service began executing ``call_id``."""

    call_id: str
    name: str


class ToolCallCompleted(Event, frozen=True, kw_only=True):
    """``call_id`` ran: ``output`` with secrets removed, cut with a marker past the limit (``truncated``; the whole
    output in ``full_output_path``, relative to the workspace); ``is_error``: the tool ran and reported an error
    (a non-zero exit, an MCP error result); ``duration_ms`` wall time."""

    call_id: str
    name: str
    output: str
    is_error: bool = False
    truncated: bool = False
    full_output_path: str | None = None
    duration_ms: float = 0.0
    exit_code: int | None = None


class ToolCallFailed(Event, frozen=True, kw_only=True):
    """``call_id`` did not run or did not finish: ``error_code`` one of :data:`TOOL_ERRORS` (or a tool's own,
    e.g. ``http_404``), ``message`` for the model and the person."""

    call_id: str
    name: str
    error_code: str
    message: str = ""
    duration_ms: float = 0.0


class AgentRunCompleted(Event, frozen=True, kw_only=True):
    """The model answered without asking for tools: ``answer``; ``iterations`` turns, ``tool_calls`` calls."""

    answer: str
    iterations: int
    tool_calls: int = 0


class AgentRunFailed(Event, frozen=True, kw_only=True):
    """A limit or a failure ended the run: ``reason`` one of :data:`RUN_ENDINGS` but ``answered``/``cancelled``;
    ``message`` says which limit and what the run had done; ``partial`` the last model text."""

    reason: str
    message: str = ""
    iterations: int = 0
    tool_calls: int = 0
    partial: str = ""


class AgentRunCancelled(Event, frozen=True, kw_only=True):
    """A person stopped the run (``hermes cancel``); a running tool call is stopped too."""

    reason: str = "user"
    by: str = "local"


AGENT_EVENTS: tuple[type[Event], ...] = (
    AgentRunStarted,
    ModelTurnCompleted,
    ToolCallRequested,
    ApprovalRequested,
    ApprovalGranted,
    ApprovalDenied,
    ApprovalExpired,
    ToolCallDispatched,
    ToolCallStarted,
    ToolCallCompleted,
    ToolCallFailed,
    AgentRunCompleted,
    AgentRunFailed,
    AgentRunCancelled,
)

RunId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,128}$")]


class StartAgentRun(Command, frozen=True, kw_only=True):
    """Run an agent on ``task``: ``profile`` (None: picked from the task's type), ``project`` (its workspace).
    ``thread_id`` is the run id; ``callback_url``: the notifier POSTs the result there when the run ends."""

    thread_id: RunId
    task: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]
    profile: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_-]{1,32}$")] | None = None
    project: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "default"
    channel: str = "api"
    user_id: str = "local"
    origin: dict[str, str] = {}
    priority: Annotated[int, msgspec.Meta(ge=1, le=10)] = 5
    callback_url: Annotated[str, msgspec.Meta(pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$", max_length=2048)] | None = None


class DecideApproval(Command, frozen=True, kw_only=True):
    """A person's answer to ``approval_id`` of run ``thread_id``: ``approve`` (``scope`` once or run) or ``reject``.
    ``user_id`` is who answers (set by the surface from its authentication, never by a model)."""

    thread_id: RunId
    approval_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    decision: Literal["approve", "reject"]
    scope: Literal["once", "run"] = APPROVE_ONCE
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    user_id: str = "local"
    channel: str = "api"


class ExpireApproval(Command, frozen=True, kw_only=True):
    """The orchestrator's timer: ``approval_id``'s time is up."""

    thread_id: RunId
    approval_id: str


class ExpireAgentRun(Command, frozen=True, kw_only=True):
    """The orchestrator's timer: the run's wall time is up."""

    thread_id: RunId


class CancelAgentRun(Command, frozen=True, kw_only=True):
    """Stop run ``thread_id`` (``hermes cancel``, ``POST /api/agent/runs/{id}/cancel``): its model turn and its
    running tool call stop, and it ends with :class:`AgentRunCancelled`. ``user_id``: who asked."""

    thread_id: RunId
    user_id: str = "local"


AGENT_COMMANDS: tuple[type[Command], ...] = (
    StartAgentRun,
    DecideApproval,
    ExpireApproval,
    ExpireAgentRun,
    CancelAgentRun,
)

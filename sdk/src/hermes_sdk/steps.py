"""The steps of an agent run: each event of the run's log as a typed, frozen dataclass.

A run is a thread; its events arrive live on ``GET /api/threads/{run_id}/events`` (``event:`` the type, ``data:``
the event's JSON, ``id:`` its log sequence) and, after the fact, as ``steps`` of ``GET /api/agent/runs/{id}``
(each the event's JSON with its ``type``). :func:`parse_step` makes either one a :class:`Step`: the subclass of
its type when there is one (:data:`STEP_TYPES`), else a plain :class:`Step` (``job_queued``, ``backend_selected``
and the other job events of the run's model turns). Every step keeps the event's JSON in ``raw``.

The loop of a run: :class:`AgentRunStarted` → :class:`ModelTurnCompleted` (text and tool calls) → per call a
:class:`ToolCallRequested` (the permission decision: allow, ask or deny) → for ``ask`` an
:class:`ApprovalRequested` that a person answers (:class:`ApprovalGranted`, :class:`ApprovalDenied`, or
:class:`ApprovalExpired`) → :class:`ToolCallDispatched`, :class:`ToolCallStarted`, then :class:`ToolCallCompleted`
or :class:`ToolCallFailed` → the next turn ... until :class:`AgentRunCompleted` (the answer),
:class:`AgentRunFailed` (a limit, a failure) or :class:`AgentRunCancelled`; the run's thread then ends
(:class:`ThreadCompleted` / :class:`ThreadFailed`). ``step.ends_run`` is True for those five.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from hermes_sdk import _convert as c


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A call the model asked for: ``call_id``, tool ``name``, ``arguments`` (a JSON object)."""

    call_id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolCall:
        return cls(
            call_id=c.text(data.get("call_id")), name=c.text(data.get("name")), arguments=c.obj(data.get("arguments"))
        )


@dataclass(frozen=True, kw_only=True)
class Step:
    """One event of a run. ``type`` the event type (``tool_call_completed``...); ``sequence`` its log sequence
    (the SSE ``id``; None for a token or a step read from ``GET /api/agent/runs/{id}``); ``run_id`` the run (the
    event's ``aggregate_id``); ``occurred_at`` when (UTC); ``raw`` the event's JSON as sent."""

    TYPE: ClassVar[str] = ""
    ENDS_RUN: ClassVar[bool] = False

    type: str
    sequence: int | None = None
    run_id: str = ""
    occurred_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ends_run(self) -> bool:
        """The run (or its thread) ended with this step: nothing follows it."""
        return self.ENDS_RUN

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The subclass's own fields from the event's JSON."""
        return {}


@dataclass(frozen=True, kw_only=True)
class AgentRunStarted(Step):
    """The run began: ``profile`` (and ``profile_reason``: named by the user, or why it was picked), ``project``
    (its workspace), the granted ``tools``, those that always need approval, its limits."""

    TYPE: ClassVar[str] = "agent_run_started"

    task: str = ""
    profile: str = ""
    profile_reason: str = ""
    project: str = "default"
    tools: tuple[str, ...] = ()
    approval_required: tuple[str, ...] = ()
    max_iterations: int = 0
    timeout_s: float = 0.0

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            task=c.text(data.get("task")),
            profile=c.text(data.get("profile")),
            profile_reason=c.text(data.get("profile_reason")),
            project=c.text(data.get("project"), "default"),
            tools=c.texts(data.get("tools")),
            approval_required=c.texts(data.get("approval_required")),
            max_iterations=c.integer(data.get("max_iterations")),
            timeout_s=c.number(data.get("timeout_s")),
        )


@dataclass(frozen=True, kw_only=True)
class ModelTurnCompleted(Step):
    """Model turn ``iteration`` (1-based) answered: its ``text`` and the ``tool_calls`` it asked for (none: the
    text is the run's answer)."""

    TYPE: ClassVar[str] = "model_turn_completed"

    iteration: int = 0
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            iteration=c.integer(data.get("iteration")),
            text=c.text(data.get("text")),
            tool_calls=tuple(ToolCall.from_json(call) for call in c.objs(data.get("tool_calls"))),
            prompt_tokens=c.integer(data.get("prompt_tokens")),
            completion_tokens=c.integer(data.get("completion_tokens")),
        )


@dataclass(frozen=True, kw_only=True)
class ToolCallRequested(Step):
    """The model asked for ``name(arguments)``; ``decision`` is what the permission rules said (``allow``,
    ``ask``: an approval follows, ``deny``: a failure follows), ``rule`` the rule that decided (None: a default),
    ``reason`` in words."""

    TYPE: ClassVar[str] = "tool_call_requested"

    call_id: str = ""
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    decision: str = ""
    rule: str | None = None
    reason: str = ""
    iteration: int = 0

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            call_id=c.text(data.get("call_id")),
            name=c.text(data.get("name")),
            arguments=c.obj(data.get("arguments")),
            decision=c.text(data.get("decision")),
            rule=c.opt_text(data.get("rule")),
            reason=c.text(data.get("reason")),
            iteration=c.integer(data.get("iteration")),
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalRequested(Step):
    """A person must approve call ``call_id`` (``name(arguments)``) before it runs: answer ``approval_id`` with
    ``approve`` or ``reject`` before ``expires_at`` (UTC), or it is denied."""

    TYPE: ClassVar[str] = "approval_requested"

    approval_id: str = ""
    call_id: str = ""
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    expires_at: datetime | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            approval_id=c.text(data.get("approval_id")),
            call_id=c.text(data.get("call_id")),
            name=c.text(data.get("name")),
            arguments=c.obj(data.get("arguments")),
            reason=c.text(data.get("reason")),
            expires_at=c.dt(data.get("expires_at")),
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalGranted(Step):
    """``by`` approved ``approval_id``; ``scope`` ``once`` (this call) or ``run`` (the same call again in this
    run); ``channel`` where the answer came from."""

    TYPE: ClassVar[str] = "approval_granted"

    approval_id: str = ""
    call_id: str = ""
    scope: str = "once"
    by: str = ""
    channel: str = ""
    comment: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            approval_id=c.text(data.get("approval_id")),
            call_id=c.text(data.get("call_id")),
            scope=c.text(data.get("scope"), "once"),
            by=c.text(data.get("by")),
            channel=c.text(data.get("channel")),
            comment=c.text(data.get("comment")),
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalDenied(Step):
    """``by`` rejected ``approval_id`` (the model is told, with ``comment``)."""

    TYPE: ClassVar[str] = "approval_denied"

    approval_id: str = ""
    call_id: str = ""
    by: str = ""
    channel: str = ""
    comment: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            approval_id=c.text(data.get("approval_id")),
            call_id=c.text(data.get("call_id")),
            by=c.text(data.get("by")),
            channel=c.text(data.get("channel")),
            comment=c.text(data.get("comment")),
        )


@dataclass(frozen=True, kw_only=True)
class ApprovalExpired(Step):
    """Nobody answered ``approval_id`` in time: a denial."""

    TYPE: ClassVar[str] = "approval_expired"

    approval_id: str = ""
    call_id: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(approval_id=c.text(data.get("approval_id")), call_id=c.text(data.get("call_id")))


@dataclass(frozen=True, kw_only=True)
class ToolCallDispatched(Step):
    """Call ``call_id`` may run (allowed by a rule, or approved: ``approval_id``)."""

    TYPE: ClassVar[str] = "tool_call_dispatched"

    call_id: str = ""
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    approval_id: str | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            call_id=c.text(data.get("call_id")),
            name=c.text(data.get("name")),
            arguments=c.obj(data.get("arguments")),
            approval_id=c.opt_text(data.get("approval_id")),
        )


@dataclass(frozen=True, kw_only=True)
class ToolCallStarted(Step):
    """The tool service began executing ``call_id``."""

    TYPE: ClassVar[str] = "tool_call_started"

    call_id: str = ""
    name: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(call_id=c.text(data.get("call_id")), name=c.text(data.get("name")))


@dataclass(frozen=True, kw_only=True)
class ToolCallCompleted(Step):
    """``call_id`` ran: its ``output`` (secrets removed; cut past the limit when ``truncated``, the whole of it
    then in ``full_output_path`` in the workspace); ``is_error``: the tool ran and reported an error;
    ``duration_ms``; ``exit_code`` of a command (None for other tools)."""

    TYPE: ClassVar[str] = "tool_call_completed"

    call_id: str = ""
    name: str = ""
    output: str = ""
    is_error: bool = False
    truncated: bool = False
    full_output_path: str | None = None
    duration_ms: float = 0.0
    exit_code: int | None = None

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            call_id=c.text(data.get("call_id")),
            name=c.text(data.get("name")),
            output=c.text(data.get("output")),
            is_error=c.flag(data.get("is_error")),
            truncated=c.flag(data.get("truncated")),
            full_output_path=c.opt_text(data.get("full_output_path")),
            duration_ms=c.number(data.get("duration_ms")),
            exit_code=c.opt_integer(data.get("exit_code")),
        )


@dataclass(frozen=True, kw_only=True)
class ToolCallFailed(Step):
    """``call_id`` did not run or did not finish: ``error_code`` (``denied``, ``approval_denied``,
    ``approval_expired``, ``timeout``, ``unknown_tool``... or a tool's own), ``message``."""

    TYPE: ClassVar[str] = "tool_call_failed"

    call_id: str = ""
    name: str = ""
    error_code: str = ""
    message: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            call_id=c.text(data.get("call_id")),
            name=c.text(data.get("name")),
            error_code=c.text(data.get("error_code")),
            message=c.text(data.get("message")),
        )


@dataclass(frozen=True, kw_only=True)
class AgentRunCompleted(Step):
    """The model answered without asking for tools: the run's ``answer``, after ``iterations`` turns and
    ``tool_calls`` calls."""

    TYPE: ClassVar[str] = "agent_run_completed"
    ENDS_RUN: ClassVar[bool] = True

    answer: str = ""
    iterations: int = 0
    tool_calls: int = 0

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            answer=c.text(data.get("answer")),
            iterations=c.integer(data.get("iterations")),
            tool_calls=c.integer(data.get("tool_calls")),
        )


@dataclass(frozen=True, kw_only=True)
class AgentRunFailed(Step):
    """A limit or a failure ended the run: ``reason`` (``max_iterations``, ``timeout``, ``budget``,
    ``model_failed``), ``message``, ``partial`` the last model text."""

    TYPE: ClassVar[str] = "agent_run_failed"
    ENDS_RUN: ClassVar[bool] = True

    reason: str = ""
    message: str = ""
    iterations: int = 0
    tool_calls: int = 0
    partial: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            reason=c.text(data.get("reason")),
            message=c.text(data.get("message")),
            iterations=c.integer(data.get("iterations")),
            tool_calls=c.integer(data.get("tool_calls")),
            partial=c.text(data.get("partial")),
        )


@dataclass(frozen=True, kw_only=True)
class AgentRunCancelled(Step):
    """A person (``by``) stopped the run."""

    TYPE: ClassVar[str] = "agent_run_cancelled"
    ENDS_RUN: ClassVar[bool] = True

    reason: str = ""
    by: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(reason=c.text(data.get("reason")), by=c.text(data.get("by")))


@dataclass(frozen=True, kw_only=True)
class ThreadCompleted(Step):
    """The run's thread completed (after :class:`AgentRunCompleted`): ``reason``."""

    TYPE: ClassVar[str] = "thread_completed"
    ENDS_RUN: ClassVar[bool] = True

    reason: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(reason=c.text(data.get("reason")))


@dataclass(frozen=True, kw_only=True)
class ThreadFailed(Step):
    """The run's thread failed (after :class:`AgentRunFailed` / :class:`AgentRunCancelled`, or on its own):
    ``error_code``, ``message``."""

    TYPE: ClassVar[str] = "thread_failed"
    ENDS_RUN: ClassVar[bool] = True

    error_code: str = ""
    message: str = ""

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(error_code=c.text(data.get("error_code")), message=c.text(data.get("message")))


@dataclass(frozen=True, kw_only=True)
class Token(Step):
    """A piece of a model turn's text as it streams (only from ``steps(..., tokens=True)``): ``job_id`` the turn,
    ``seq`` its position (from 0), ``done`` on the last one. Tokens are not in the log: ``sequence`` is None."""

    TYPE: ClassVar[str] = "token"

    job_id: str = ""
    seq: int = 0
    text: str = ""
    done: bool = False

    @classmethod
    def _fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        return dict(
            job_id=c.text(data.get("job_id")),
            seq=c.integer(data.get("seq")),
            text=c.text(data.get("text")),
            done=c.flag(data.get("done")),
        )


STEP_TYPES: dict[str, type[Step]] = {
    cls.TYPE: cls
    for cls in (
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
        ThreadCompleted,
        ThreadFailed,
        Token,
    )
}
"""Event type → its :class:`Step` subclass."""

RUN_END_TYPES = frozenset(t for t, cls in STEP_TYPES.items() if cls.ENDS_RUN)
"""The event types after which a run's stream has nothing more."""


def parse_step(data: dict[str, Any], event_type: str | None = None, sequence: int | None = None) -> Step:
    """The step of one event's JSON ``data``; ``event_type`` (the SSE ``event:``) else ``data["type"]``;
    ``sequence`` the SSE ``id``."""
    kind = event_type or c.text(data.get("type"), "unknown")
    cls = STEP_TYPES.get(kind, Step)
    return cls(
        type=kind,
        sequence=sequence,
        run_id=c.text(data.get("aggregate_id")),
        occurred_at=c.dt(data.get("occurred_at")),
        raw=data,
        **cls._fields(data),
    )

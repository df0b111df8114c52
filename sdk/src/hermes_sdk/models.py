"""The typed results of :class:`hermes_sdk.Hermes` and :class:`hermes_sdk.AsyncHermes`: frozen dataclasses, each
with the fields a program needs and ``raw``, the gateway's JSON as it came (every field, including those added
after this SDK was written). Times are aware :class:`~datetime.datetime` s (UTC)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hermes_sdk import _convert as c
from hermes_sdk.steps import Step, parse_step

RUN_ENDED = frozenset({"completed", "failed", "cancelled"})
"""The statuses of a run that has ended."""


# ---- ideas ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Submitted:
    """An idea was accepted (202): its ``thread_id``, where to read it (``status_url``) and watch it
    (``events_url``), relative to the gateway."""

    thread_id: str
    status_url: str = ""
    events_url: str = ""
    command_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Submitted:
        return cls(
            thread_id=c.text(data.get("thread_id")),
            status_url=c.text(data.get("status_url")),
            events_url=c.text(data.get("events_url")),
            command_id=c.text(data.get("command_id")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Accepted:
    """The gateway accepted a command about ``thread_id`` (202: answers, a rating, a cancellation); what it causes
    arrives on the thread's events. ``command_id`` when the gateway names it."""

    thread_id: str
    command_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Accepted:
        thread_id = c.text(data.get("thread_id")) or c.text(data.get("run_id"))
        return cls(thread_id=thread_id, command_id=c.opt_text(data.get("command_id")), raw=data)


@dataclass(frozen=True, kw_only=True)
class Question:
    """A clarifying question: answer it by ``question_id``; ``answer`` once answered."""

    question_id: str
    category: str = ""
    text: str = ""
    suggestions: tuple[str, ...] = ()
    answer: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Question:
        return cls(
            question_id=c.text(data.get("question_id")),
            category=c.text(data.get("category")),
            text=c.text(data.get("text")),
            suggestions=c.texts(data.get("suggestions")),
            answer=c.opt_text(data.get("answer")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Job:
    """One model call of a thread: ``kind`` (draft1, draft2, agent_turn...), ``status``, where it ran, its tokens,
    latency (ms), text or error; ``cancellable`` while it has not ended."""

    job_id: str
    kind: str = ""
    status: str = ""
    backend: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float | None = None
    text: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    cancellable: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            job_id=c.text(data.get("job_id")),
            kind=c.text(data.get("kind")),
            status=c.text(data.get("status")),
            backend=c.opt_text(data.get("backend")),
            model=c.opt_text(data.get("model")),
            prompt_tokens=c.integer(data.get("prompt_tokens")),
            completion_tokens=c.integer(data.get("completion_tokens")),
            latency_ms=c.opt_number(data.get("latency_ms")),
            text=c.opt_text(data.get("text")),
            error_code=c.opt_text(data.get("error_code")),
            error_message=c.opt_text(data.get("error_message")),
            cancellable=c.flag(data.get("cancellable")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Thread:
    """A thread as the gateway shows it: ``status`` (accepted, drafting, awaiting_answers, refining, completed,
    failed...), ``kind`` (idea, workflow, agent), its questions, jobs and drafts. ``answerable``, ``ratable`` and
    ``open`` say what may be done to it now."""

    thread_id: str
    idea: str = ""
    status: str = ""
    kind: str = "idea"
    channel: str = ""
    user_id: str = ""
    project: str = "default"
    completion_reason: str | None = None
    draft1: str | None = None
    draft2: str | None = None
    rating: int | None = None
    answerable: bool = False
    ratable: bool = False
    open: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None
    questions: tuple[Question, ...] = ()
    jobs: tuple[Job, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def final_draft(self) -> str | None:
        """Draft 2 when there is one, else draft 1."""
        return self.draft2 if self.draft2 is not None else self.draft1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Thread:
        return cls(
            thread_id=c.text(data.get("thread_id")),
            idea=c.text(data.get("idea")),
            status=c.text(data.get("status")),
            kind=c.text(data.get("kind"), "idea"),
            channel=c.text(data.get("channel")),
            user_id=c.text(data.get("user_id")),
            project=c.text(data.get("project"), "default"),
            completion_reason=c.opt_text(data.get("completion_reason")),
            draft1=c.opt_text(data.get("draft1")),
            draft2=c.opt_text(data.get("draft2")),
            rating=c.opt_integer(data.get("rating")),
            answerable=c.flag(data.get("answerable")),
            ratable=c.flag(data.get("ratable")),
            open=c.flag(data.get("open"), True),
            created_at=c.dt(data.get("created_at")),
            updated_at=c.dt(data.get("updated_at")),
            questions=tuple(Question.from_json(q) for q in c.objs(data.get("questions"))),
            jobs=tuple(Job.from_json(j) for j in c.objs(data.get("jobs"))),
            raw=data,
        )


# ---- agent runs -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunStarted:
    """An agent run was accepted (202): its ``run_id`` (also its ``thread_id``: a run is a thread), the
    ``profile`` asked for (None: one is picked from the task, see the run's first step), where to read it
    (``url``) and watch it (``events_url``)."""

    run_id: str
    thread_id: str = ""
    profile: str | None = None
    url: str = ""
    events_url: str = ""
    command_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunStarted:
        run_id = c.text(data.get("run_id"))
        return cls(
            run_id=run_id,
            thread_id=c.text(data.get("thread_id"), run_id),
            profile=c.opt_text(data.get("profile")),
            url=c.text(data.get("url")),
            events_url=c.text(data.get("events_url")),
            command_id=c.text(data.get("command_id")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Approval:
    """A tool call waiting for (or given) a person's decision: ``tool`` with ``arguments`` in run ``run_id``;
    ``status`` pending, granted, denied or expired; ``expires_at`` (a pending one is denied then); once decided,
    ``decided_by``, ``scope`` (once, run) and ``comment``."""

    approval_id: str
    run_id: str = ""
    call_id: str = ""
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    status: str = ""
    user_id: str = ""
    requested_at: datetime | None = None
    expires_at: datetime | None = None
    decided_at: datetime | None = None
    decided_by: str | None = None
    scope: str | None = None
    comment: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Approval:
        return cls(
            approval_id=c.text(data.get("approval_id")),
            run_id=c.text(data.get("run_id")),
            call_id=c.text(data.get("call_id")),
            tool=c.text(data.get("tool")),
            arguments=c.obj(data.get("arguments")),
            reason=c.text(data.get("reason")),
            status=c.text(data.get("status")),
            user_id=c.text(data.get("user_id")),
            requested_at=c.dt(data.get("requested_at")),
            expires_at=c.dt(data.get("expires_at")),
            decided_at=c.dt(data.get("decided_at")),
            decided_by=c.opt_text(data.get("decided_by")),
            scope=c.opt_text(data.get("scope")),
            comment=c.text(data.get("comment")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Decided:
    """An approval's answer was accepted (202): ``decision`` approve or reject; the run goes on (see its steps)."""

    approval_id: str
    decision: str = ""
    command_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Decided:
        return cls(
            approval_id=c.text(data.get("approval_id")),
            decision=c.text(data.get("decision")),
            command_id=c.text(data.get("command_id")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class AgentRun:
    """One agent run: ``status`` running, awaiting_approval, completed, failed or cancelled; ``reason`` how it
    ended (answered, max_iterations, timeout, budget, model_failed, cancelled) and ``message``; ``answer`` once
    completed; its counts (``iterations`` model turns, ``tool_calls``, ``tokens``, ``cost_cents``). ``steps``
    (its events in order) and ``approvals`` only from :meth:`~hermes_sdk.Hermes.agent_run` (empty in a listing)."""

    run_id: str
    task: str = ""
    profile: str = ""
    profile_reason: str = ""
    project: str = "default"
    status: str = ""
    user_id: str = ""
    answer: str | None = None
    reason: str | None = None
    message: str | None = None
    iterations: int = 0
    tool_calls: int = 0
    tokens: int = 0
    cost_cents: float = 0.0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    steps: tuple[Step, ...] = ()
    approvals: tuple[Approval, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def ended(self) -> bool:
        """Completed, failed or cancelled: nothing more will happen."""
        return self.status in RUN_ENDED

    @property
    def succeeded(self) -> bool:
        return self.status == "completed"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AgentRun:
        return cls(
            run_id=c.text(data.get("run_id")),
            task=c.text(data.get("task")),
            profile=c.text(data.get("profile")),
            profile_reason=c.text(data.get("profile_reason")),
            project=c.text(data.get("project"), "default"),
            status=c.text(data.get("status")),
            user_id=c.text(data.get("user_id")),
            answer=c.opt_text(data.get("answer")),
            reason=c.opt_text(data.get("reason")),
            message=c.opt_text(data.get("message")),
            iterations=c.integer(data.get("iterations")),
            tool_calls=c.integer(data.get("tool_calls")),
            tokens=c.integer(data.get("tokens")),
            cost_cents=c.number(data.get("cost_cents")),
            created_at=c.dt(data.get("created_at")),
            updated_at=c.dt(data.get("updated_at")),
            steps=tuple(parse_step(s) for s in c.objs(data.get("steps"))),
            approvals=tuple(Approval.from_json(a) for a in c.objs(data.get("approvals"))),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Profile:
    """An agent profile: the ``tools`` it grants, those that need approval, its limits."""

    name: str
    description: str = ""
    tools: tuple[str, ...] = ()
    approval_required: tuple[str, ...] = ()
    max_iterations: int = 0
    timeout_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        return cls(
            name=c.text(data.get("name")),
            description=c.text(data.get("description")),
            tools=c.texts(data.get("tools")),
            approval_required=c.texts(data.get("approval_required")),
            max_iterations=c.integer(data.get("max_iterations")),
            timeout_s=c.number(data.get("timeout_s")),
            raw=data,
        )


# ---- tools ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A tool of the registry: ``parameters`` its JSON Schema; ``read_only``; ``permission`` its default
    decision; ``server`` the MCP server it comes from (None: built in)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    read_only: bool = False
    permission: str | None = None
    server: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tool:
        return cls(
            name=c.text(data.get("name")),
            description=c.text(data.get("description")),
            parameters=c.obj(data.get("parameters")),
            read_only=c.flag(data.get("read_only")),
            permission=c.opt_text(data.get("permission")),
            server=c.opt_text(data.get("server")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class ToolRegistry:
    """Every tool an agent may be granted (iterate it for the :class:`Tool` s); ``sandbox``: why the sandbox
    cannot start (None: it can)."""

    tools: tuple[Tool, ...] = ()
    sandbox: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def __iter__(self) -> Iterator[Tool]:
        return iter(self.tools)

    def __len__(self) -> int:
        return len(self.tools)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ToolRegistry:
        return cls(
            tools=tuple(Tool.from_json(t) for t in c.objs(data.get("tools"))),
            sandbox=c.opt_text(data.get("sandbox")),
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class McpServers:
    """The configured MCP servers (``servers``: name → its configuration) and, per connected one, the names of
    the tools it serves (``connected``)."""

    servers: dict[str, dict[str, Any]] = field(default_factory=dict)
    connected: dict[str, tuple[str, ...]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> McpServers:
        servers = {k: v for k, v in c.obj(data.get("servers")).items() if isinstance(v, dict)}
        connected = {k: c.texts(v) for k, v in c.obj(data.get("connected")).items()}
        return cls(servers=servers, connected=connected, raw=data)

"""Skill proposals: an aggregate (``aggregate_type`` ``skill_proposal``, subjects
``hermes.evt.skill_proposal.<id>.<type>``) that changes the skills library only after a person approves.

The loop: :class:`SkillProposed` (by the orchestrator: a person's or agent's ``ProposeSkill``, or its own analysis
of the run history, ``ImproveSkills``) → the tool service validates it (ruff, a security scan, the skill's tests in
the sandbox) and appends :class:`SkillProposalValidated` → only a proposal that passed waits for a person
(``DecideSkillProposal``): :class:`SkillProposalApproved` or :class:`SkillProposalRejected` (kept with the reason)
→ the tool service commits the approved files to the library's git repository and reloads its registry
(:class:`SkillProposalApplied`, or :class:`SkillProposalFailed`) → ``RollbackSkillChange`` asks for
:class:`SkillRollbackRequested`, done by the tool service (``git revert``, :class:`SkillChangeRolledBack`).

Only the orchestrator appends proposals, approvals and rollback requests; the tool service appends only what it did.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.queries import StreamSequence

MAX_FILES = 40
MAX_FILE_CHARS = 100_000
ProposalId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Files = Annotated[
    dict[
        Annotated[str, msgspec.Meta(min_length=1, max_length=300)],
        Annotated[str, msgspec.Meta(max_length=MAX_FILE_CHARS)] | None,
    ],
    msgspec.Meta(max_length=MAX_FILES),
]
"""Paths relative to the library's root → the new text (None: delete the file)."""
STATUSES = ("validating", "invalid", "awaiting_approval", "approved", "rejected", "applied", "failed", "rolled_back")


class _ProposalEvent(Event, frozen=True, kw_only=True):
    aggregate_type = "skill_proposal"


class SkillProposed(_ProposalEvent, frozen=True, kw_only=True):
    """A change to the library: ``skill`` (the folder it touches), ``kind`` new_skill or fix_skill, ``rationale``
    (why, shown to the person who decides), ``files``, ``source`` person, agent or analysis, ``evidence`` the runs
    that led to it."""

    user_id: str
    skill: str
    kind: Literal["new_skill", "fix_skill"] = "new_skill"
    rationale: str
    files: dict[str, str | None]
    source: Literal["person", "agent", "analysis"] = "person"
    evidence: list[str] = []


class SkillProposalValidated(_ProposalEvent, frozen=True, kw_only=True):
    """The tool service's verdict: ``ok`` only without blocking findings and with the skill's tests passing;
    ``findings`` (tool, code, severity, file, line, message), ``tests`` (ran, passed, failed, output, duration_ms),
    ``diff`` (unified, against ``base`` the library's commit)."""

    ok: bool
    findings: list[dict[str, Any]] = []
    tests: dict[str, Any] = {}
    diff: str = ""
    base: str = ""


class SkillProposalApproved(_ProposalEvent, frozen=True, kw_only=True):
    by: str
    comment: str = ""


class SkillProposalRejected(_ProposalEvent, frozen=True, kw_only=True):
    by: str
    reason: str = ""


class SkillProposalApplied(_ProposalEvent, frozen=True, kw_only=True):
    """Committed as ``commit``; ``skills`` the library's skills after the reload."""

    commit: str
    skills: list[str] = []


class SkillProposalFailed(_ProposalEvent, frozen=True, kw_only=True):
    error_code: str
    message: str = ""


class SkillRollbackRequested(_ProposalEvent, frozen=True, kw_only=True):
    by: str
    commit: str


class SkillChangeRolledBack(_ProposalEvent, frozen=True, kw_only=True):
    """``commit`` reverted by ``revert_commit``."""

    commit: str
    revert_commit: str
    skills: list[str] = []


PROPOSAL_EVENTS: tuple[type[Event], ...] = (
    SkillProposed,
    SkillProposalValidated,
    SkillProposalApproved,
    SkillProposalRejected,
    SkillProposalApplied,
    SkillProposalFailed,
    SkillRollbackRequested,
    SkillChangeRolledBack,
)


class ProposeSkill(Command, frozen=True, kw_only=True):
    """Propose ``files`` for skill ``skill`` (a person through the API or CLI, or an agent)."""

    proposal_id: ProposalId
    skill: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    kind: Literal["new_skill", "fix_skill"] = "new_skill"
    rationale: Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
    files: Files
    source: Literal["person", "agent", "analysis"] = "person"
    evidence: Annotated[list[str], msgspec.Meta(max_length=50)] = []
    user_id: str = "local"


class DecideSkillProposal(Command, frozen=True, kw_only=True):
    """A person's decision on a proposal that passed validation (``user_id`` from the surface's authentication)."""

    proposal_id: ProposalId
    decision: Literal["approve", "reject"]
    comment: Annotated[str, msgspec.Meta(max_length=2000)] = ""
    user_id: str = "local"


class RollbackSkillChange(Command, frozen=True, kw_only=True):
    proposal_id: ProposalId
    user_id: str = "local"


class ImproveSkills(Command, frozen=True, kw_only=True):
    """Analyse the recent runs now (the orchestrator's self-improvement loop runs it every few hours)."""

    user_id: str = "local"


PROPOSAL_COMMANDS: tuple[type[Command], ...] = (ProposeSkill, DecideSkillProposal, RollbackSkillChange, ImproveSkills)


def status_after(status: str | None, e: Event) -> str | None:
    """A proposal's status after ``e`` (None before :class:`SkillProposed`): validating → invalid |
    awaiting_approval → approved | rejected → applied | failed → rolled_back."""
    if isinstance(e, SkillProposed):
        return status or "validating"
    if status is None:
        return None
    if isinstance(e, SkillProposalValidated) and status == "validating":
        return "awaiting_approval" if e.ok else "invalid"
    if isinstance(e, SkillProposalApproved) and status == "awaiting_approval":
        return "approved"
    if isinstance(e, SkillProposalRejected) and status == "awaiting_approval":
        return "rejected"
    if isinstance(e, SkillProposalApplied) and status == "approved":
        return "applied"
    if isinstance(e, SkillProposalFailed) and status == "approved":
        return "failed"
    if isinstance(e, SkillChangeRolledBack) and status == "applied":
        return "rolled_back"
    return status


def check_files(skill: str, files: dict[str, str | None]) -> str | None:
    """What is wrong with a proposal's paths (a sentence) or None: each inside the skill's folder, relative,
    without ``..`` or hidden parts."""
    if not files:
        return "a proposal changes at least one file"
    for path in files:
        parts = path.split("/")
        if path.startswith("/") or parts[0] != skill or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            return f"{path!r} is not a file inside the skill's folder {skill!r}"
    return None


# ---- the skills library, asked of the tool service (``hermes.query.skills``) ---------------------------------------


class SkillView(msgspec.Struct, frozen=True, kw_only=True):
    """One skill of the library at its ``HEAD``: ``tool`` its tool name (``skill__<name>``); usage: ``uses``,
    ``success_rate`` (0..1), ``mean_ms``, ``tokens_saved`` (as the runs that used it reported)."""

    name: str
    tool: str
    description: str
    tags: list[str] = []
    version: str = "1"
    inputs: dict[str, Any] = {}
    uses: int = 0
    success_rate: float | None = None
    mean_ms: float | None = None
    tokens_saved: int = 0


class SkillsQuery(msgspec.Struct, frozen=True, kw_only=True):
    log_limit: int = 20


class SkillsReply(msgspec.Struct, frozen=True, kw_only=True):
    """The library: ``head`` commit, ``skills``, ``invalid`` (folder → why it is not loaded), ``log`` (newest
    commits: sha, message, time in Unix seconds)."""

    head: str = ""
    skills: list[SkillView] = []
    invalid: dict[str, str] = {}
    log: list[dict[str, Any]] = []


# ---- proposals, asked of the orchestrator (``hermes.query.skill_proposals``) --------------------------------------


class ProposalView(msgspec.Struct, frozen=True, kw_only=True):
    """One proposal (``status`` as :data:`STATUSES`); ``files``, ``diff``, ``findings`` and ``tests`` only when
    asked for one (``proposal_id``)."""

    proposal_id: str
    user_id: str
    skill: str
    kind: str
    source: str
    rationale: str
    status: str
    ok: bool | None = None
    evidence: list[str] = []
    findings: list[dict[str, Any]] = []
    tests: dict[str, Any] = {}
    diff: str = ""
    files: dict[str, str | None] = {}
    commit: str | None = None
    revert_commit: str | None = None
    decided_by: str | None = None
    reason: str = ""
    error_code: str | None = None
    created_at: Any = None
    updated_at: Any = None


class ProposalsQuery(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str | None = None
    status: str | None = None
    proposal_id: str | None = None
    limit: int = 100
    min_sequence: StreamSequence = 0


class ProposalsReply(msgspec.Struct, frozen=True, kw_only=True):
    proposals: list[ProposalView] = []

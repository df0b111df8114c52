"""The tool service's side of skill proposals: the durable, ordered consumer ``tools-skills`` of
``skill_proposed``, ``skill_proposal_approved`` and ``skill_rollback_requested``
(``hermes.evt.skill_proposal.*.<type>``).

- :class:`~hermes_proto.skill_proposals.SkillProposed` → :func:`~hermes_tools.skills.validate.validate_proposal`
  (static checks, the skill's tests in the sandbox: nothing of the proposal runs outside it) →
  ``SkillProposalValidated``.
- ``SkillProposalApproved`` → the files of the proposal's ``SkillProposed``, read back from the stream → one commit
  ``<skill>: <rationale's first line> (proposal <id>)`` → registry reloaded → ``SkillProposalApplied``.
- ``SkillRollbackRequested`` → ``git revert`` of the proposal's commit → reload → ``SkillChangeRolledBack``.
- A refused change (a ``SkillError``) → ``SkillProposalFailed(error_code, message)``; a handler that keeps
  failing (ruff, git or the sandbox broken) ends the same way when the consumer gives up.

Idempotent: every event's id is derived from its cause's id (a redelivery appends the same event, dropped by
JetStream's duplicate window), and the git history is asked first (a commit naming ``(proposal <id>)``, a revert
naming ``This reverts commit <sha>``) so a change is never made twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.bus import ConsumerSpec, Delivery
from hermes_proto.codec import decode_event
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.keyring import ready as keyring_ready
from hermes_proto.skill_proposals import (
    SkillChangeRolledBack,
    SkillProposalApplied,
    SkillProposalApproved,
    SkillProposalFailed,
    SkillProposalValidated,
    SkillProposed,
    SkillRollbackRequested,
    check_files,
)

from hermes_tools.metrics import SKILL_CHANGES, SKILL_PROPOSALS_VALIDATED
from hermes_tools.skills.manifest import SkillError
from hermes_tools.skills.validate import validate_proposal
from hermes_tools.skills_library import SkillsLibrary

DURABLE = "tools-skills"
HANDLED = (SkillProposed, SkillProposalApproved, SkillRollbackRequested)
MAX_DIFF_CHARS = 20_000
log = structlog.get_logger("hermes.tools.skills")
E = TypeVar("E", bound=Event)
Append = Callable[[list[Event]], Awaitable[None]]


def _envelope(cause: Event, name: str) -> dict[str, Any]:
    return dict(
        event_id=derived_id(cause.event_id, name),
        aggregate_id=cause.aggregate_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
    )


def commit_message(proposed: SkillProposed) -> str:
    """``<skill>: <first line of the rationale> (proposal <id>)``."""
    lines = [line.strip() for line in proposed.rationale.strip().splitlines()]
    first = (lines[0] if lines else "")[:200] or proposed.kind.replace("_", " ")
    return f"{proposed.skill}: {first} {proposal_marker(proposed.aggregate_id)}"


def proposal_marker(proposal_id: str) -> str:
    """What the commit of proposal ``proposal_id`` says in its message: ``(proposal <id>)``."""
    return f"(proposal {proposal_id})"


def _finding(code: str, message: str) -> dict[str, Any]:
    return {"tool": "hermes", "code": code, "severity": "high", "file": "", "line": 0, "message": message}


class SkillProposals:
    """The ``tools-skills`` handlers. ``append``: the service's retried append; ``js``: reads proposals back
    from ``HERMES_EVENTS``."""

    def __init__(self, library: SkillsLibrary, js: JetStreamContext, append: Append) -> None:
        self.library = library
        self.js = js
        self.append = append

    def spec(self) -> ConsumerSpec:
        """The consumer: ordered, one message per fetch (a validation takes seconds: a batch would wait past its
        ack deadline and be redelivered)."""
        return ConsumerSpec(
            stream=subjects.EVENTS_STREAM,
            durable=DURABLE,
            filter_subjects=[subjects.event_type_filter(t) for t in HANDLED],
            decode=decode_event,
            handler=self.on_event,
            ordered=True,
            batch=1,
            on_give_up=self.on_give_up,
        )

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        with structlog.contextvars.bound_contextvars(proposal_id=event.aggregate_id):
            if isinstance(event, SkillProposed):
                await self.validate(event)
            elif isinstance(event, SkillProposalApproved):
                await self.apply(event)
            elif isinstance(event, SkillRollbackRequested):
                await self.rollback(event)

    async def stored(self, proposal_id: str, kind: type[E]) -> E | None:
        """The last event of type ``kind`` of proposal ``proposal_id`` in the stream, None when there is none."""
        subject = f"hermes.evt.{kind.aggregate_type}.{proposal_id}.{kind.type_name()}"
        try:
            raw = await self.js.get_last_msg(subjects.EVENTS_STREAM, subject)
        except NotFoundError:
            return None
        await keyring_ready((raw.data,))
        event = decode_event(raw.data)
        return event if isinstance(event, kind) else None

    async def validate(self, e: SkillProposed) -> None:
        """Append the verdict on ``e``. Raises (to be retried) when ruff or the sandbox cannot run."""
        known = await self.stored(e.aggregate_id, SkillProposalValidated)
        if known is not None and known.causation_id == e.event_id:
            log.info("skill_proposal_already_validated", ok=known.ok)
            return
        base = await asyncio.to_thread(self.library.repo.head)
        problem = check_files(e.skill, e.files)
        if problem is not None:  # the sandbox is not even started for files outside the skill's folder
            verdict = SkillProposalValidated(
                **_envelope(e, "validated"), ok=False, findings=[_finding("path_outside_skill", problem)], base=base
            )
        else:
            v = await validate_proposal(e.files, self.library.repo, self.library.sandbox)
            try:
                diff = await asyncio.to_thread(self.library.repo.diff, e.files)
            except SkillError:
                diff = ""
            verdict = SkillProposalValidated(
                **_envelope(e, "validated"),
                ok=v.ok,
                findings=[msgspec.to_builtins(f) for f in v.findings],
                tests=msgspec.to_builtins(v.tests),
                diff=diff[:MAX_DIFF_CHARS],
                base=base,
            )
        await self.append([verdict])
        SKILL_PROPOSALS_VALIDATED.labels("ok" if verdict.ok else "invalid").inc()
        log.info(
            "skill_proposal_validated",
            skill=e.skill,
            ok=verdict.ok,
            findings=[f"{f['tool']}:{f['code']}" for f in verdict.findings][:20],
            tests_passed=verdict.tests.get("passed", 0),
            tests_failed=verdict.tests.get("failed", 0),
        )

    async def apply(self, e: SkillProposalApproved) -> None:
        """Commit the approved proposal once, reload, append ``SkillProposalApplied`` (or ``Failed``)."""
        proposed = await self.stored(e.aggregate_id, SkillProposed)
        if proposed is None:
            await self.fail(e, "proposal_missing", "the proposal's SkillProposed event is not in the stream")
            return
        verdict = await self.stored(e.aggregate_id, SkillProposalValidated)
        if verdict is None or not verdict.ok:
            await self.fail(e, "not_validated", "only a proposal that passed validation can be applied")
            return
        commit = await asyncio.to_thread(self.library.find_commit, proposal_marker(e.aggregate_id), True)
        if commit is not None:
            log.info("skill_proposal_already_applied", commit=commit)
        else:
            before = await asyncio.to_thread(self.library.repo.head)
            try:
                commit = await asyncio.to_thread(self.library.repo.apply, proposed.files, commit_message(proposed))
            except SkillError as exc:
                await self.fail(e, exc.code, exc.message)
                return
            if commit == before:
                await self.fail(e, "no_change", "the proposal's files are already the library's: nothing to commit")
                return
            SKILL_CHANGES.labels("applied").inc()
        skills = await self.library.reload()
        await self.append([SkillProposalApplied(**_envelope(e, "applied"), commit=commit, skills=skills)])
        log.info("skill_proposal_applied", skill=proposed.skill, commit=commit, skills=skills)

    async def rollback(self, e: SkillRollbackRequested) -> None:
        """Revert the proposal's commit once, reload, append ``SkillChangeRolledBack`` (or ``Failed``)."""
        commit = await asyncio.to_thread(self.library.resolve, e.commit)
        if commit is None:
            await self.fail(e, "unknown_commit", f"no commit {e.commit!r} in the skills library")
            return
        message = await asyncio.to_thread(self.library.message, commit)
        if proposal_marker(e.aggregate_id) not in message:
            await self.fail(e, "not_this_proposal", f"commit {commit[:12]} is not the commit of this proposal")
            return
        revert = await asyncio.to_thread(self.library.find_commit, f"This reverts commit {commit}")
        if revert is not None:
            log.info("skill_change_already_rolled_back", commit=commit, revert_commit=revert)
        else:
            try:
                revert = await asyncio.to_thread(self.library.repo.rollback, commit)
            except SkillError as exc:
                await self.fail(e, exc.code, exc.message)
                return
            SKILL_CHANGES.labels("rolled_back").inc()
        skills = await self.library.reload()
        await self.append(
            [SkillChangeRolledBack(**_envelope(e, "rolled_back"), commit=commit, revert_commit=revert, skills=skills)]
        )
        log.info("skill_change_rolled_back", commit=commit, revert_commit=revert, skills=skills)

    async def fail(self, cause: Event, code: str, message: str) -> None:
        await self.append([SkillProposalFailed(**_envelope(cause, "failed"), error_code=code, message=message[:2000])])
        SKILL_CHANGES.labels("failed").inc()
        log.warning("skill_change_failed", error_code=code, message=message[:300])

    async def on_give_up(self, event: Any, reason: str, detail: str) -> None:
        """Before a message is dead-lettered: a proposal gets a failing verdict, a change ``SkillProposalFailed``,
        so the proposal does not wait for an outcome that never comes."""
        if not isinstance(event, HANDLED):
            return
        text = f"the tool service gave up ({reason}): {detail[:300]}"
        if isinstance(event, SkillProposed):
            finding = _finding("validation_error", text)
            await self.append([SkillProposalValidated(**_envelope(event, "validated"), ok=False, findings=[finding])])
            SKILL_PROPOSALS_VALIDATED.labels("invalid").inc()
        else:
            await self.fail(event, "internal", text)

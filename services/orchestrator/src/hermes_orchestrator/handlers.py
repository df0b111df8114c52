"""The orchestrator's handlers: one plain function per command (:data:`COMMAND_HANDLERS`) and per event it reacts to
(:data:`EVENT_HANDLERS`). Each takes the message, the thread's decision state (from the in-memory fold), its
dependencies and the time, and returns the events to append; :mod:`hermes_orchestrator.decisions` runs them one
thread at a time. The decisions themselves are the pure functions of :mod:`hermes_orchestrator.domain`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Engine

from hermes_proto import agents as ag
from hermes_proto import facts, ideas
from hermes_proto import project_memory as pm
from hermes_proto.base import Command, Event
from hermes_proto.commands import (
    AnswerQuestions,
    CancelJob,
    CloseAnswerWindow,
    ExpireWorkflow,
    RateThread,
    RequestClassification,
    SubmitChat,
    SubmitIdea,
    SubmitWorkflow,
)
from hermes_proto.costs import estimate_tokens
from hermes_proto.events import DraftPresented, ExecutionAbandoned, ExecutionCompleted, QuestionsProposed
from hermes_proto.ids import utcnow
from hermes_proto.threads import AWAITING_ANSWERS

from hermes_orchestrator import agent_handlers, domain, sessions
from hermes_orchestrator.agent_handlers import AgentDeps
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.settings import UserLimits
from hermes_orchestrator.soul import SoulFile
from hermes_orchestrator.state import ThreadState
from hermes_orchestrator.timers import Timers

CHAT_TURNS = Counter("hermes_orchestrator_chat_turns_total", "Chat turns queued (SubmitChat), by channel", ["channel"])
MEMORIES_RECALLED = Histogram(
    "hermes_orchestrator_memories_recalled", "Memories given to one new prompt", buckets=(0, 1, 2, 3, 5, 10, 20)
)


@dataclass
class Deps:
    """What handlers use: the fold (preferences), the limits in force, SOUL.md, the read model's engine (memory
    recall, SQLite FTS5) and the timers."""

    fold: ThreadFold
    limits: UserLimits
    soul: SoulFile | None
    engine: Engine
    timers: Timers
    agents: AgentDeps | None = None
    """Agent runs: profiles, permission rules, the tool service (None: agent runs are not decided here)."""


CommandHandler = Callable[[Any, ThreadState | None, Deps, datetime], Awaitable[list[Event]]]
EventHandler = Callable[[Any, ThreadState | None, Deps, datetime], Awaitable[list[Event]]]


async def harness(deps: Deps, user_id: str, about: str, thread_id: str, project: str = "default") -> domain.Harness:
    """SOUL.md, ``user_id``'s project memory of ``project`` (:func:`hermes_proto.project_memory.select_for_prompt`)
    and the memories of earlier turns relevant to ``about`` (outside ``thread_id``; an FTS5 search of the read
    model, off the event loop), all within the memory token budget, project memory first (none with a budget of 0)."""
    limits = deps.limits.current()
    soul = deps.soul.read() if deps.soul is not None else ""
    if limits.memory_token_budget <= 0:
        return domain.Harness(soul=soul)
    entries = pm.select_for_prompt(deps.fold.memory.values(), project, user_id, limits.memory_token_budget, utcnow())
    used = sum(estimate_tokens(e.text) + pm.ENTRY_OVERHEAD_TOKENS for e in entries)
    notes = tuple((e.kind, e.text) for e in entries)
    left = limits.memory_token_budget - used
    if left <= 0 or limits.memory_max_items <= 0:
        return domain.Harness(soul=soul, project_memory=notes)

    def recall() -> tuple[domain.Memory, ...]:
        with deps.engine.connect() as conn:
            return sessions.recall(conn, user_id, about, thread_id, left, limits.memory_max_items)

    memories = await asyncio.to_thread(recall)
    MEMORIES_RECALLED.observe(len(memories))
    return domain.Harness(soul=soul, memories=memories, project_memory=notes)


# ---- commands ------------------------------------------------------------------------------------------------------


async def submit_idea(cmd: SubmitIdea, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    if state is not None:  # a redelivery: nothing to recall
        return []
    limits = deps.limits.current()
    # the facts of the idea's project and keyword type (the learner may read another type from a model: then its
    # proposal lists the facts of that one, and those draft 1 lacked make a draft 2)
    within = facts.scopes(idea_type=ideas.classify(cmd.idea), project=cmd.project)
    known = (
        deps.fold.usable_preferences(cmd.user_id, limits.preference_threshold, now, within)
        if limits.preference_threshold is not None
        else []
    )
    return domain.decide_submit(
        None, cmd, limits, now, known, await harness(deps, cmd.user_id, cmd.idea, cmd.thread_id, cmd.project)
    )


async def submit_chat(cmd: SubmitChat, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    fresh = state is None or cmd.job_id not in state.jobs
    about = next((m.content for m in reversed(cmd.messages) if m.role == "user"), cmd.messages[-1].content)
    turn = await harness(deps, cmd.user_id, about, cmd.thread_id, cmd.project) if fresh else domain.Harness()
    events = domain.decide_chat(state, cmd, deps.limits.current(), now, turn)
    if events:
        CHAT_TURNS.labels(cmd.channel).inc()
    return events


async def answer_questions(cmd: AnswerQuestions, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    soul = deps.soul.read() if deps.soul is not None and state is not None else ""
    return domain.decide_answers(state, cmd, deps.limits.current(), now, domain.Harness(soul=soul))


async def rate_thread(cmd: RateThread, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    return domain.decide_rate(state, cmd, now)


async def close_answer_window(
    cmd: CloseAnswerWindow, state: ThreadState | None, deps: Deps, now: datetime
) -> list[Event]:
    soul = deps.soul.read() if deps.soul is not None and state is not None else ""
    return domain.decide_close_window(state, cmd, now, deps.limits.current(), domain.Harness(soul=soul))


async def submit_workflow(cmd: SubmitWorkflow, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    return domain.decide_submit_workflow(state, cmd, deps.limits.current(), now)


async def cancel_job(cmd: CancelJob, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    return domain.decide_cancel(state, cmd, now)


async def expire_workflow(cmd: ExpireWorkflow, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    return domain.decide_expire_workflow(state, cmd, now)


async def request_classification(
    cmd: RequestClassification, state: ThreadState | None, deps: Deps, now: datetime
) -> list[Event]:
    return domain.decide_classification(state, cmd, deps.limits.current(), now)


COMMAND_HANDLERS: dict[type[Command], CommandHandler] = {
    SubmitIdea: submit_idea,
    SubmitChat: submit_chat,
    SubmitWorkflow: submit_workflow,
    AnswerQuestions: answer_questions,
    RateThread: rate_thread,
    CancelJob: cancel_job,
    CloseAnswerWindow: close_answer_window,
    ExpireWorkflow: expire_workflow,
    RequestClassification: request_classification,
    ag.StartAgentRun: agent_handlers.start_run,
    ag.DecideApproval: agent_handlers.decide_approval,
    ag.ExpireApproval: agent_handlers.expire_approval,
    ag.ExpireAgentRun: agent_handlers.expire_run,
    ag.CancelAgentRun: agent_handlers.cancel_run,
}
"""Every command the orchestrator decides on (all of ``hermes.cmd.>``)."""

NEW_THREAD_COMMANDS = (SubmitIdea, SubmitChat, SubmitWorkflow, ag.StartAgentRun)
"""Commands that open a thread or continue the orchestrator's own: every event they depend on was appended by this
orchestrator and folded before its decision ended, so they need not wait for the whole log."""


# ---- reactions -----------------------------------------------------------------------------------------------------


async def execution_completed(
    event: ExecutionCompleted, state: ThreadState | None, deps: Deps, now: datetime
) -> list[Event]:
    if state is not None and state.run is not None:
        return await agent_handlers.turn_completed(event, state, deps, now)
    return domain.react_execution_completed(state, event, now)


async def execution_abandoned(
    event: ExecutionAbandoned, state: ThreadState | None, deps: Deps, now: datetime
) -> list[Event]:
    return domain.react_execution_abandoned(state, event, now)


async def questions_proposed(
    event: QuestionsProposed, state: ThreadState | None, deps: Deps, now: datetime
) -> list[Event]:
    soul = deps.soul.read() if deps.soul is not None and state is not None and not event.questions else ""
    return domain.react_questions_proposed(state, event, now, deps.limits.current(), domain.Harness(soul=soul))


async def draft_presented(event: DraftPresented, state: ThreadState | None, deps: Deps, now: datetime) -> list[Event]:
    """Draft 1 opens the answer window: a timer sends ``CloseAnswerWindow`` when it ends."""
    if event.draft_number == 1 and state is not None and state.status == AWAITING_ANSWERS:
        deadline = state.answer_deadline or event.occurred_at
        deps.timers.answer_window(event.aggregate_id, deadline, event.correlation_id)
    return []


EVENT_HANDLERS: dict[type[Event], EventHandler] = {
    ExecutionCompleted: execution_completed,
    ExecutionAbandoned: execution_abandoned,
    QuestionsProposed: questions_proposed,
    DraftPresented: draft_presented,
    ag.ToolCallCompleted: agent_handlers.call_closed,
    ag.ToolCallFailed: agent_handlers.call_closed,
}
"""The events the orchestrator reacts to; its reactor consumer's subject filters are made from these keys."""

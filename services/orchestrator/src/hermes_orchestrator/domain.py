"""The thread aggregate's decisions, as pure functions of state and message.

``decide_*`` take a command (or an event the process must react to) and the current
:class:`ThreadState`, and return the events to append. Event ids are derived from the
cause's id, so deciding twice on the same message yields the same ids (JetStream drops
the duplicates), and every decision also checks state so it stays idempotent outside the
dedup window. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from hermes_proto import facts
from hermes_proto.agents import AGENT_TURN
from hermes_proto.base import ChatMessage, Event
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
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    Assumption,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobCancelled,
    JobFailed,
    JobQueued,
    JobSkipped,
    QuestionsProposed,
    ThreadCompleted,
    ThreadFailed,
    ThreadOpened,
    ThreadRated,
    WorkflowPlanned,
    WorkflowStep,
)
from hermes_proto.ids import derived_id
from hermes_proto.text import normalize_text
from hermes_proto.threads import (  # noqa: F401 (the thread's rules, used here and re-exported for the tests)
    ACTIVE,
    AWAITING_ANSWERS,
    CHAT,
    CLASSIFY,
    COMPLETED,
    DRAFT1,
    DRAFT2,
    DRAFTING,
    FAILED,
    FINAL_STATUSES,
    OPEN_JOB_STATUSES,
    REFINING,
    STEP,
    STEP_FINAL,
    WORKFLOW,
)

from hermes_orchestrator.state import (  # noqa: F401 (the state decisions take, re-exported)
    JobState,
    QuestionState,
    StepState,
    ThreadState,
    evolve,
    step_job_id,
)

FINAL = FINAL_STATUSES

SYSTEM_PROMPT = (
    "You are Hermes, a practical assistant. Turn the user's idea into a concrete, useful draft: "
    "a short plan or answer with clear steps. Be specific and concise."
)

WORKFLOW_SYSTEM_PROMPT = (
    "You are Hermes, a practical assistant carrying out one step of a larger piece of work. Use the results "
    "of the earlier steps you are given; answer this step concretely and concisely."
)


@dataclass(frozen=True)
class Limits:
    """``max_questions`` (count), ``answer_timeout_s`` (seconds), ``max_tokens`` (tokens per draft or step),
    ``job_timeout_s`` (seconds from queued to result, None: none; seed ``job_timeout_seconds``),
    ``workflow_max_steps`` and ``workflow_timeout_s`` (seed ``hermes.workflow.max_steps`` /
    ``timeout_minutes``)."""

    max_questions: int = 5
    answer_timeout_s: float = 600.0
    max_tokens: int = 256
    temperature: float = 0.7
    job_timeout_s: float | None = None
    workflow_max_steps: int = 10
    workflow_timeout_s: float | None = None
    preference_threshold: float | None = 0.75
    """Learned preferences of at least this confidence are applied to draft 1 (None: learning disabled)."""
    memory_token_budget: int = 300
    """Estimated tokens of memory markers a new prompt may be given (0: none)."""
    memory_max_items: int = 3


LIMIT_OF_SETTING = {
    "hermes.learning.max_questions_per_conversation": "max_questions",
    "hermes.answer_timeout_seconds": "answer_timeout_s",
    "hermes.draft.max_tokens": "max_tokens",
    "hermes.draft.temperature": "temperature",
    "hermes.memory.token_budget": "memory_token_budget",
    "hermes.memory.max_items": "memory_max_items",
}
"""The :class:`Limits` field each editable setting of :data:`hermes_proto.userconfig.USER_SETTINGS` sets."""


def with_user_settings(base: Limits, values: dict[str, str]) -> Limits:
    """``base`` (the deployment's limits) with the users' values applied; a value that no longer parses (its
    bounds changed) is ignored, so a stored setting can never stop a decision."""
    from hermes_proto.userconfig import BY_KEY

    changes: dict[str, float | int] = {}
    for key, text in values.items():
        if key in LIMIT_OF_SETTING and key in BY_KEY:
            try:
                changes[LIMIT_OF_SETTING[key]] = BY_KEY[key].parse(text)
            except ValueError:
                continue
    return replace(base, **changes) if changes else base


def _envelope(cause_id: str, name: str, thread_id: str, correlation_id: str, now: datetime) -> dict:
    return dict(
        event_id=derived_id(cause_id, name),
        aggregate_id=thread_id,
        occurred_at=now,
        correlation_id=correlation_id,
        causation_id=cause_id,
    )


@dataclass(frozen=True)
class Memory:
    """An earlier turn of the same user given to a new prompt: ``job_id`` (recorded on ``JobQueued.memories``),
    ``day`` (ISO date it was asked), ``prompt`` (its last user message) and ``reply``."""

    job_id: str
    day: str
    prompt: str
    reply: str


@dataclass(frozen=True)
class Harness:
    """What every turn's system prompt is made of, whatever the channel: ``soul`` (the text of SOUL.md) and
    ``memories`` (earlier turns relevant to this one, already cut to the memory token budget)."""

    soul: str = ""
    memories: tuple[Memory, ...] = ()
    project_memory: tuple[tuple[str, str], ...] = ()
    """Project memory entries for the prompt, ``(kind, text)``, most relevant first."""

    def prompt(self) -> str:
        """The soul (:data:`SYSTEM_PROMPT` when blank), then the project memory after :data:`PROJECT_MEMORY_INTRO`
        (one ``- [kind] text`` line each), then one memory marker per memory after :data:`MEMORY_INTRO`."""
        text = self.soul.strip() or SYSTEM_PROMPT
        if self.project_memory:
            lines = "\n".join(f"- [{kind}] {' '.join(entry.split())}" for kind, entry in self.project_memory)
            text += "\n\n" + PROJECT_MEMORY_INTRO + "\n" + lines
        if self.memories:
            text += "\n\n" + MEMORY_INTRO + "\n" + "\n".join(memory_marker(m) for m in self.memories)
        return text


PROJECT_MEMORY_INTRO = (
    "What this project has settled in earlier sessions (decisions, corrections, preferences, patterns; follow it "
    "unless the user says otherwise):"
)
MEMORY_INTRO = "Relevant memories from past turns with this user (use them only where they help):"


def memory_marker(m: Memory) -> str:
    """``[memory <job id> · <day>] User: <prompt> → Hermes: <reply>`` on one line (newlines folded)."""
    fold = lambda text: " ".join(text.split())  # noqa: E731
    return f"[memory {m.job_id} · {m.day}] User: {fold(m.prompt)} → Hermes: {fold(m.reply)}"


PREFERENCES_INTRO = (
    "What you know about this user from earlier conversations (follow it unless the idea says otherwise):"
)


def draft1_messages(
    idea: str, assumptions: Sequence[Assumption] = (), harness: Harness = Harness()
) -> list[ChatMessage]:
    """The draft-1 prompt: the system prompt (the harness's soul and memories, then the user's learned
    preferences, one line each, when any apply) and the idea."""
    return [
        ChatMessage(role="system", content=system_prompt(assumptions, harness)),
        ChatMessage(role="user", content=idea),
    ]


def system_prompt(assumptions: Sequence[Assumption] = (), harness: Harness = Harness()) -> str:
    """The harness's prompt (:data:`SYSTEM_PROMPT` with no SOUL.md and no memories), followed by the learned
    preferences a thread applies (one :func:`preference_line` each, after :data:`PREFERENCES_INTRO`) when there
    are any."""
    head = harness.prompt()
    if not assumptions:
        return head
    return head + "\n\n" + PREFERENCES_INTRO + "\n" + "\n".join(preference_line(a) for a in assumptions)


def preference_line(a: Assumption) -> str:
    """One learned fact as a prompt line: ``- Depth: detailed``, ``- Style: casual``, ``- Budget: <the user's
    words>``, ``- Tech stack: <the user's words>`` (:func:`hermes_proto.facts.label`)."""
    return f"- {facts.label(a.category, a.key)}: {a.value}"


def draft2_messages(
    idea: str,
    draft1: str,
    answered: list[tuple[str, str]],
    assumptions: Sequence[Assumption] = (),
    harness: Harness = Harness(),
) -> list[ChatMessage]:
    """The refinement prompt: the system prompt (the harness's soul; draft 1 holds what memories gave) with every
    learned fact the thread applies (:func:`applied`), the idea, draft 1 and each (question, answer) pair; with no
    answers (a draft 2 on learned facts alone) it asks for a draft that follows those facts."""
    if answered:
        clarifications = "\n".join(f"- {q} {a}" for q, a in answered)
        ask = (
            f"My clarifications:\n{clarifications}\n\nWrite an improved second draft that follows every clarification."
        )
    else:
        ask = "Write an improved second draft that follows what you know about me."
    user = f"My idea: {idea}\n\nYour first draft:\n{draft1}\n\n{ask}"
    return [
        ChatMessage(role="system", content=system_prompt(assumptions, harness)),
        ChatMessage(role="user", content=user),
    ]


def job_id_for(cause_id: str, kind: str) -> str:
    return derived_id(cause_id, "job", kind)


def decide_submit(
    state: ThreadState | None,
    cmd: SubmitIdea,
    limits: Limits,
    now: datetime,
    assumptions: Sequence[Assumption] = (),
    harness: Harness = Harness(),
) -> list[Event]:
    """Open the thread and queue draft 1 at once ("always keep moving"), its prompt made by ``harness`` (SOUL.md
    and memories, recorded on ``JobQueued.memories``) and applying ``assumptions`` (the user's learned
    preferences; recorded on ``ThreadOpened``). A thread that exists already (a redelivered command) yields
    nothing."""
    if state is not None:
        return []
    corr = cmd.correlation_id or cmd.command_id
    max_q = limits.max_questions if cmd.max_questions is None else max(0, cmd.max_questions)
    return [
        ThreadOpened(
            **_envelope(cmd.command_id, "thread_opened", cmd.thread_id, corr, now),
            idea=cmd.idea,
            channel=cmd.channel,
            user_id=cmd.user_id,
            origin=dict(cmd.origin),
            max_questions=max_q,
            answer_timeout_s=limits.answer_timeout_s,
            project=cmd.project,
            private=cmd.private,
            priority=cmd.priority,
            callback_url=cmd.callback_url,
            source_app=cmd.source_app,
            assumptions=list(assumptions),
        ),
        JobQueued(
            **_envelope(cmd.command_id, "job_queued", cmd.thread_id, corr, now),
            job_id=job_id_for(cmd.command_id, DRAFT1),
            kind=DRAFT1,
            messages=draft1_messages(cmd.idea, assumptions, harness),
            max_tokens=limits.max_tokens,
            temperature=limits.temperature,
            priority=cmd.priority,
            private=cmd.private,
            project=cmd.project,
            timeout_s=limits.job_timeout_s,
            memories=[m.job_id for m in harness.memories],
        ),
    ]


def chat_messages(messages: Sequence[ChatMessage], harness: Harness) -> list[ChatMessage]:
    """A chat turn's prompt: one system message (the harness's prompt, then the caller's own system messages)
    and the caller's other messages in their order."""
    own = [m.content for m in messages if m.role == "system"]
    system = "\n\n".join([harness.prompt(), *own])
    return [ChatMessage(role="system", content=system), *(m for m in messages if m.role != "system")]


def chat_title(messages: Sequence[ChatMessage]) -> str:
    """A session's title: its first turn's last user message (else its last message), cleaned as typed text is
    (:func:`hermes_proto.text.normalize_text`: no controls that reorder the thread list), whitespace made single
    spaces, at most 200 characters."""
    users = [m.content for m in messages if m.role == "user"] or [messages[-1].content]
    return " ".join(normalize_text(users[-1]).split())[:200]


def decide_chat(
    state: ThreadState | None, cmd: SubmitChat, limits: Limits, now: datetime, harness: Harness = Harness()
) -> list[Event]:
    """One chat turn: open the session (a ``chat`` thread, ``origin.session_key``) on its first turn, then queue
    the turn's job (kind ``chat``, the caller's backend/model/max_tokens/temperature, else the defaults) with the
    harness's prompt. Nothing for a job id the session already has (a redelivery) or a thread of another kind."""
    if state is not None and (state.kind != CHAT or cmd.job_id in state.jobs):
        return []
    corr = state.correlation_id if state is not None else (cmd.correlation_id or cmd.command_id)
    env = lambda name: _envelope(cmd.command_id, name, cmd.thread_id, corr, now)  # noqa: E731
    events: list[Event] = []
    if state is None:
        events.append(
            ThreadOpened(
                **env("thread_opened"),
                idea=chat_title(cmd.messages),
                channel=cmd.channel,
                user_id=cmd.user_id,
                origin={**cmd.origin, "session_key": cmd.session_key},
                max_questions=0,
                answer_timeout_s=limits.answer_timeout_s,
                project=cmd.project,
                private=cmd.private,
                priority=cmd.priority,
                kind=CHAT,
                source_app=cmd.source_app,
            )
        )
    events.append(
        JobQueued(
            **env("job_queued"),
            job_id=cmd.job_id,
            kind=CHAT,
            messages=chat_messages(cmd.messages, harness),
            max_tokens=cmd.max_tokens or limits.max_tokens,
            temperature=limits.temperature if cmd.temperature is None else cmd.temperature,
            priority=cmd.priority,
            private=cmd.private,
            project=cmd.project,
            backend=cmd.backend,
            model=cmd.model,
            timeout_s=limits.job_timeout_s,
            memories=[m.job_id for m in harness.memories],
        )
    )
    return events


def decide_answers(
    state: ThreadState | None, cmd: AnswerQuestions, limits: Limits, now: datetime, harness: Harness = Harness()
) -> list[Event]:
    """Record the answers to known questions and queue draft 2 (its system prompt from ``harness``: SOUL.md).
    Ignored unless the thread awaits answers and at least one non-empty answer matches one of its questions."""
    if state is None or state.status != AWAITING_ANSWERS or state.draft1 is None:
        return []
    known = {q.question_id: q for q in state.questions}
    answers = [
        Answer(question_id=a.question_id, text=a.text.strip(), assumed=a.assumed)
        for a in cmd.answers
        if a.question_id in known and a.text.strip()
    ]
    if not answers:
        return []
    answered = [(known[a.question_id].text, a.text) for a in answers]
    corr = state.correlation_id
    return [
        AnswersRecorded(**_envelope(cmd.command_id, "answers_recorded", state.thread_id, corr, now), answers=answers),
        _draft2(state, cmd.command_id, answered, limits, harness, now),
    ]


def applied(draft1: Sequence[Assumption], proposed: Sequence[Assumption]) -> list[Assumption]:
    """Every learned fact a thread's drafts apply: draft 1's (``ThreadOpened.assumptions``) except the slots the
    learner's proposal (``QuestionsProposed.assumptions``) names, then the proposal's (the learner knows the idea
    type, so its fact for a slot wins)."""
    named = {(a.category, a.key) for a in proposed}
    return [a for a in draft1 if (a.category, a.key) not in named] + list(proposed)


def unapplied(state: ThreadState) -> list[Assumption]:
    """The facts the learner's proposal applies that draft 1 did not (another slot, or another value): what a draft 2
    must add, even when nobody answers."""
    had = {(a.category, a.key, a.value) for a in state.assumptions}
    return [a for a in state.assumed if (a.category, a.key, a.value) not in had]


def _draft2(
    state: ThreadState, cause_id: str, answered: list[tuple[str, str]], limits: Limits, harness: Harness, now: datetime
) -> JobQueued:
    """The draft-2 job: the answers given (if any) and every fact the thread applies."""
    assumptions = applied(state.assumptions, state.assumed)
    return JobQueued(
        **_envelope(cause_id, "job_queued", state.thread_id, state.correlation_id, now),
        job_id=job_id_for(cause_id, DRAFT2),
        kind=DRAFT2,
        messages=draft2_messages(state.idea, state.draft1 or "", answered, assumptions, harness),
        max_tokens=limits.max_tokens,
        temperature=limits.temperature,
        priority=state.priority,
        private=state.private,
        project=state.project,
        timeout_s=limits.job_timeout_s,
    )


def decide_classification(
    state: ThreadState | None, cmd: RequestClassification, limits: Limits, now: datetime
) -> list[Event]:
    """Queue the learner's classification call (``JobQueued`` kind ``classify``, job type ``analysis``, the thread's
    priority, privacy and budget scope). Nothing for an unknown, closed or workflow thread, or a job id the thread
    already has (a redelivered command)."""
    if state is None or state.status in FINAL or state.kind == WORKFLOW or cmd.job_id in state.jobs:
        return []
    return [
        JobQueued(
            **_envelope(cmd.command_id, "job_queued", state.thread_id, state.correlation_id, now),
            job_id=cmd.job_id,
            kind=CLASSIFY,
            messages=list(cmd.messages),
            max_tokens=cmd.max_tokens,
            temperature=cmd.temperature,
            priority=state.priority,
            job_type="analysis",
            private=state.private,
            project=state.project,
            timeout_s=limits.job_timeout_s,
        )
    ]


def decide_rate(state: ThreadState | None, cmd: RateThread, now: datetime) -> list[Event]:
    """Record the user's 1-5 rating of a completed thread's final draft; ignored for an unknown or unfinished
    thread (the gateway answers 404/409 before publishing)."""
    if state is None or state.status != COMPLETED:
        return []
    return [
        ThreadRated(
            **_envelope(cmd.command_id, "thread_rated", state.thread_id, state.correlation_id, now),
            rating=cmd.rating,
            draft_number=state.final_draft_number or 1,
            comment=cmd.comment.strip(),
        )
    ]


def decide_close_window(
    state: ThreadState | None,
    cmd: CloseAnswerWindow,
    now: datetime,
    limits: Limits = Limits(),
    harness: Harness = Harness(),
) -> list[Event]:
    """The answer window elapsed with the thread still waiting for answers: a draft 2 on the learned facts draft 1
    lacked (:func:`unapplied`) when there are any, else complete on draft 1."""
    if state is None or state.status != AWAITING_ANSWERS:
        return []
    if unapplied(state):
        return [_draft2(state, cmd.command_id, [], limits, harness, now)]
    return [
        ThreadCompleted(
            **_envelope(cmd.command_id, "thread_completed", state.thread_id, state.correlation_id, now),
            final_draft_number=1,
            reason="answer_timeout",
        )
    ]


def react_execution_completed(state: ThreadState | None, ev: ExecutionCompleted, now: datetime) -> list[Event]:
    """Present the draft a finished job produced; draft 2 also completes the thread. In a workflow, queue the
    steps the completed one was the last dependency of. A result for a job already ended otherwise (cancelled,
    timed out) is ignored, and so is a ``classify`` job's (the learner reads it)."""
    if state is None or ev.job_id not in state.jobs or state.status in FINAL:
        return []
    job = state.jobs[ev.job_id]
    if job.closed_by != ev.event_id:  # a result for a job already ended (cancelled, or another attempt's)
        return []
    if job.kind in (CLASSIFY, CHAT, AGENT_TURN):  # the learner reads a classification; a chat reply is its
        return []  # caller's; an agent turn is decided by hermes_orchestrator.agent
    if state.kind == WORKFLOW:
        return react_step_completed(state, ev, now)
    number = 2 if job.kind == DRAFT2 else 1
    if (number == 1 and state.draft1 is not None) or (number == 2 and state.draft2 is not None):
        return []
    env = _envelope(ev.event_id, "draft_presented", state.thread_id, state.correlation_id, now)
    events: list[Event] = [
        DraftPresented(
            **env,
            job_id=ev.job_id,
            draft_number=number,
            text=ev.text,
            backend=ev.backend,
            model=ev.model,
            prompt_tokens=ev.prompt_tokens,
            completion_tokens=ev.completion_tokens,
            latency_ms=ev.latency_ms,
        )
    ]
    if number == 2:
        events.append(
            ThreadCompleted(
                **_envelope(ev.event_id, "thread_completed", state.thread_id, state.correlation_id, now),
                final_draft_number=2,
                reason="answered" if any(q.answer for q in state.questions) else "assumed",
            )
        )
    elif state.max_questions == 0:
        events.append(
            ThreadCompleted(
                **_envelope(ev.event_id, "thread_completed", state.thread_id, state.correlation_id, now),
                final_draft_number=1,
                reason="no_questions",
            )
        )
    return events


def react_execution_abandoned(state: ThreadState | None, ev: ExecutionAbandoned, now: datetime) -> list[Event]:
    """The router gave up on a job (retries and failover exhausted, or no backend): record it; a failed
    draft 1 fails the thread, a failed draft 2 completes it on draft 1, a failed workflow step skips its
    dependents, a failed ``classify`` job changes nothing else."""
    if state is None or ev.job_id not in state.jobs or state.status in FINAL:
        return []
    if state.jobs[ev.job_id].closed_by != ev.event_id:  # the job ended otherwise first (e.g. timed out)
        return []
    corr = state.correlation_id
    events: list[Event] = [
        JobFailed(
            **_envelope(ev.event_id, "job_failed", state.thread_id, corr, now),
            job_id=ev.job_id,
            error_code=ev.error_code,
            message=ev.message,
        )
    ]
    return events + _job_ended(state, ev.job_id, ev.event_id, "failed", ev.error_code, ev.message, now)


def _job_ended(
    state: ThreadState, job_id: str, cause_id: str, outcome: str, error_code: str, message: str, now: datetime
) -> list[Event]:
    """What a job ending without a result (``outcome`` failed or cancelled) means for its thread."""
    job, corr = state.jobs[job_id], state.correlation_id
    env = lambda name: _envelope(cause_id, name, state.thread_id, corr, now)  # noqa: E731
    if job.kind == AGENT_TURN:
        from hermes_orchestrator import agent  # agent decisions build on this module

        return agent.turn_ended(state, job_id, cause_id, error_code, message, now)
    if job.kind in (CLASSIFY, CHAT):  # the learner falls back to its rules; a session goes on
        return []
    if state.kind == WORKFLOW:
        return _step_ended(state, job.step_id or "", cause_id, outcome, error_code, message, now)
    if job.kind == DRAFT1:
        return [ThreadFailed(**env("thread_failed"), error_code=error_code, message=f"draft 1 {outcome}: {message}")]
    reason = "draft2_cancelled" if outcome == "cancelled" else "draft2_failed"
    return [ThreadCompleted(**env("thread_completed"), final_draft_number=1, reason=reason)]


def decide_cancel(state: ThreadState | None, cmd: CancelJob, now: datetime) -> list[Event]:
    """Stop an open job: ``JobCancelled`` (the router stops dispatching it and tells its edge to stop the model
    call), plus ``JobFailed(timeout)`` when its timeout sent the command; the thread then moves on as after a
    failure. A job that already ended, or an unknown one, yields nothing, except when this very command ended it
    and the thread is still open (only part of its events were stored before a crash): then the whole decision
    is made again, with the same ids, and JetStream drops what was stored."""
    if state is None or state.status in FINAL or cmd.job_id not in state.jobs:
        return []
    env = lambda name: _envelope(cmd.command_id, name, state.thread_id, state.correlation_id, now)  # noqa: E731
    job = state.jobs[cmd.job_id]
    if job.status not in OPEN_JOB_STATUSES and job.closed_by != env("job_cancelled")["event_id"]:
        return []
    timed_out = cmd.reason == "timeout"
    message = "the job ran past its timeout" if timed_out else f"cancelled ({cmd.reason})"
    events: list[Event] = [JobCancelled(**env("job_cancelled"), job_id=cmd.job_id, reason=cmd.reason, message=message)]
    if timed_out:
        events.append(JobFailed(**env("job_failed"), job_id=cmd.job_id, error_code="timeout", message=message))
    outcome = "failed" if timed_out else "cancelled"
    return events + _job_ended(
        state, cmd.job_id, cmd.command_id, outcome, "timeout" if timed_out else "cancelled", message, now
    )


# ---- workflows ----------------------------------------------------------------------------------


def step_messages(step: WorkflowStep, results: list[tuple[str, str]]) -> list[ChatMessage]:
    """The prompt of a step: the results of the steps it depends on (``(step_id, text)`` in order), then the
    step itself."""
    earlier = "".join(f"### Result of step {sid}\n{text}\n\n" for sid, text in results)
    user = f"{earlier}### This step\n{step.prompt}" if earlier else step.prompt
    return [ChatMessage(role="system", content=WORKFLOW_SYSTEM_PROMPT), ChatMessage(role="user", content=user)]


def _resolved(step: WorkflowStep, cmd: SubmitWorkflow, limits: Limits) -> WorkflowStep:
    """The step with every default filled in, so a replay never depends on today's configuration. Retries:
    the step's, else the workflow's, else None (the router's ``HERMES_MAX_FAILOVER_ATTEMPTS``)."""
    return WorkflowStep(
        step_id=step.step_id,
        prompt=step.prompt,
        depends_on=list(step.depends_on),
        priority=step.priority or cmd.priority,
        max_retries=step.max_retries if step.max_retries is not None else cmd.max_retries,
        timeout_s=step.timeout_s or limits.job_timeout_s,
        max_tokens=step.max_tokens or limits.max_tokens,
    )


def _queue_step(
    thread_id: str,
    corr: str,
    cause_id: str,
    step: WorkflowStep,
    results: list[tuple[str, str]],
    project: str,
    private: bool,
    now: datetime,
) -> JobQueued:
    job_id = step_job_id(thread_id, step.step_id)
    return JobQueued(
        event_id=derived_id(job_id, "job_queued"),
        aggregate_id=thread_id,
        occurred_at=now,
        correlation_id=corr,
        causation_id=cause_id,
        job_id=job_id,
        kind=STEP,
        messages=step_messages(step, results),
        max_tokens=step.max_tokens or 256,
        priority=step.priority or 5,
        private=private,
        project=project,
        timeout_s=step.timeout_s,
        max_retries=step.max_retries,
        step_id=step.step_id,
        depends_on=[step_job_id(thread_id, d) for d in step.depends_on],
    )


def decide_submit_workflow(
    state: ThreadState | None, cmd: SubmitWorkflow, limits: Limits, now: datetime
) -> list[Event]:
    """Open a workflow thread, plan its steps (defaults resolved) and queue those without dependencies. More
    than ``workflow_max_steps`` steps: the thread is opened and failed with ``too_many_steps`` so the producer
    sees why. A thread that exists already yields nothing. (The DAG itself was checked when decoding.)"""
    if state is not None:
        return []
    corr = cmd.correlation_id or cmd.command_id
    env = lambda name: _envelope(cmd.command_id, name, cmd.thread_id, corr, now)  # noqa: E731
    opened = ThreadOpened(
        **env("thread_opened"),
        idea=normalize_text(cmd.title) or normalize_text(cmd.steps[0].prompt),
        channel=cmd.channel,
        user_id=cmd.user_id,
        origin=dict(cmd.origin),
        max_questions=0,
        answer_timeout_s=limits.answer_timeout_s,
        project=cmd.project,
        private=cmd.private,
        priority=cmd.priority,
        kind=WORKFLOW,
        callback_url=cmd.callback_url,
    )
    if len(cmd.steps) > limits.workflow_max_steps:
        return [
            opened,
            ThreadFailed(
                **env("thread_failed"),
                error_code="too_many_steps",
                message=f"{len(cmd.steps)} steps; at most {limits.workflow_max_steps} (HERMES_WORKFLOW_MAX_STEPS)",
            ),
        ]
    steps = [_resolved(s, cmd, limits) for s in cmd.steps]
    planned = WorkflowPlanned(
        **env("workflow_planned"), title=cmd.title, steps=steps, timeout_s=cmd.timeout_s or limits.workflow_timeout_s
    )
    roots = [
        _queue_step(cmd.thread_id, corr, cmd.command_id, s, [], cmd.project, cmd.private, now)
        for s in steps
        if not s.depends_on
    ]
    return [opened, planned, *roots]


def react_step_completed(state: ThreadState, ev: ExecutionCompleted, now: datetime) -> list[Event]:
    """A step completed: queue every waiting step whose dependencies have now all completed (with their
    results), and complete the workflow when every step has ended."""
    statuses = {sid: st.status for sid, st in state.steps.items()}
    done_step = state.jobs[ev.job_id].step_id
    if done_step in statuses:
        statuses[done_step] = "completed"
    texts = {
        st.step.step_id: (state.jobs[st.job_id].text if st.job_id in state.jobs else None)
        for st in state.steps.values()
    }
    texts[done_step or ""] = ev.text
    events: list[Event] = []
    for sid, st in state.steps.items():
        if statuses[sid] != "waiting" or not all(statuses.get(d) == "completed" for d in st.step.depends_on):
            continue
        results = [(d, texts.get(d) or "") for d in st.step.depends_on]
        events.append(
            _queue_step(
                state.thread_id, state.correlation_id, ev.event_id, st.step, results, state.project, state.private, now
            )
        )
        statuses[sid] = "queued"
    return events + _workflow_outcome(state, statuses, ev.event_id, now)


def _step_ended(
    state: ThreadState, step_id: str, cause_id: str, outcome: str, error_code: str, message: str, now: datetime
) -> list[Event]:
    """A step failed or was cancelled: every step depending on it, directly or not, is skipped with the reason."""
    statuses = {sid: st.status for sid, st in state.steps.items()}
    statuses[step_id] = outcome
    events: list[Event] = []
    changed = True
    while changed:
        changed = False
        for sid, st in state.steps.items():
            if statuses[sid] != "waiting":
                continue
            blocker = next(
                (d for d in st.step.depends_on if statuses.get(d) in STEP_FINAL and statuses[d] != "completed"), None
            )
            if blocker is None:
                continue
            statuses[sid], changed = "skipped", True
            env = _envelope(cause_id, f"job_skipped:{sid}", state.thread_id, state.correlation_id, now)
            events.append(
                JobSkipped(**env, job_id=st.job_id, step_id=sid, reason=f"step {blocker} {statuses[blocker]}")
            )
    return events + _workflow_outcome(state, statuses, cause_id, now, f"step {step_id} {outcome}: {message}")


def _workflow_outcome(
    state: ThreadState, statuses: dict[str, str], cause_id: str, now: datetime, failure: str | None = None
) -> list[Event]:
    """Once every step has ended: completed when all completed, else failed (``workflow_failed``)."""
    if not statuses or any(s not in STEP_FINAL for s in statuses.values()):
        return []
    env = _envelope(cause_id, "workflow_ended", state.thread_id, state.correlation_id, now)
    if all(s == "completed" for s in statuses.values()):
        return [ThreadCompleted(**env, final_draft_number=0, reason="workflow_completed")]
    ended = sorted(f"{sid} {s}" for sid, s in statuses.items() if s != "completed")
    return [ThreadFailed(**env, error_code="workflow_failed", message=failure or "; ".join(ended))]


def decide_expire_workflow(state: ThreadState | None, cmd: ExpireWorkflow, now: datetime) -> list[Event]:
    """The workflow's time is up: cancel its open jobs (their edges stop), skip the steps still waiting and
    fail the thread with ``workflow_timeout``."""
    if state is None or state.kind != WORKFLOW or state.status in FINAL:
        return []
    env = lambda name: _envelope(cmd.command_id, name, state.thread_id, state.correlation_id, now)  # noqa: E731
    events: list[Event] = []
    for sid, st in state.steps.items():
        if st.status in OPEN_JOB_STATUSES:
            events.append(
                JobCancelled(
                    **env(f"job_cancelled:{sid}"),
                    job_id=st.job_id,
                    reason="workflow_timeout",
                    message="the workflow ran past its timeout",
                )
            )
        elif st.status == "waiting":
            events.append(
                JobSkipped(
                    **env(f"job_skipped:{sid}"),
                    job_id=st.job_id,
                    step_id=sid,
                    reason="the workflow ran past its timeout",
                )
            )
    events.append(
        ThreadFailed(**env("thread_failed"), error_code="workflow_timeout", message="the workflow ran past its timeout")
    )
    return events


def react_questions_proposed(
    state: ThreadState | None,
    ev: QuestionsProposed,
    now: datetime,
    limits: Limits = Limits(),
    harness: Harness = Harness(),
) -> list[Event]:
    """No question worth asking: a draft 2 on the learned facts draft 1 lacked (:func:`unapplied`), else the thread
    completes on draft 1. ``state`` holds the proposal already (the first one of the thread)."""
    if state is None or ev.questions or state.status != AWAITING_ANSWERS:
        return []
    if unapplied(state):
        return [_draft2(state, ev.event_id, [], limits, harness, now)]
    return [
        ThreadCompleted(
            **_envelope(ev.event_id, "thread_completed", state.thread_id, state.correlation_id, now),
            final_draft_number=1,
            reason="no_questions",
        )
    ]

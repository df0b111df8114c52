"""The thread aggregate's decisions, as pure functions of state and message.

``decide_*`` take a command (or an event the process must react to) and the current
:class:`ThreadState`, and return the events to append. Event ids are derived from the
cause's id, so deciding twice on the same message yields the same ids (JetStream drops
the duplicates), and every decision also checks state so it stays idempotent outside the
dedup window. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from hermes_proto.base import ChatMessage, Event
from hermes_proto.commands import AnswerQuestions, CloseAnswerWindow, RateThread, SubmitIdea
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    DraftPresented,
    ExecutionCompleted,
    ExecutionAbandoned,
    JobFailed,
    JobQueued,
    QuestionsProposed,
    ThreadCompleted,
    ThreadFailed,
    ThreadOpened,
    ThreadRated,
)
from hermes_proto.ids import derived_id

SYSTEM_PROMPT = (
    "You are Hermes, a practical assistant. Turn the user's idea into a concrete, useful draft: "
    "a short plan or answer with clear steps. Be specific and concise."
)

# Thread statuses, in the order a thread normally moves through them.
DRAFTING = "drafting"
AWAITING_ANSWERS = "awaiting_answers"
REFINING = "refining"
COMPLETED = "completed"
FAILED = "failed"
FINAL = (COMPLETED, FAILED)


@dataclass
class JobState:
    job_id: str
    kind: str
    status: str


@dataclass
class QuestionState:
    question_id: str
    text: str
    answer: str | None = None


@dataclass
class ThreadState:
    """What a decision needs to know about one thread (loaded from the read model)."""

    thread_id: str
    idea: str
    status: str
    correlation_id: str
    max_questions: int
    draft1: str | None = None
    draft2: str | None = None
    final_draft_number: int | None = None
    project: str = "default"
    private: bool = False
    priority: int = 5
    jobs: dict[str, JobState] = field(default_factory=dict)
    questions: list[QuestionState] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """``max_questions`` (count), ``answer_timeout_s`` (seconds), ``max_tokens`` (tokens per draft)."""

    max_questions: int = 5
    answer_timeout_s: float = 600.0
    max_tokens: int = 256
    temperature: float = 0.7


def _envelope(cause_id: str, name: str, thread_id: str, correlation_id: str, now: datetime) -> dict:
    return dict(event_id=derived_id(cause_id, name), aggregate_id=thread_id, occurred_at=now,
                correlation_id=correlation_id, causation_id=cause_id)


def draft1_messages(idea: str) -> list[ChatMessage]:
    return [ChatMessage(role="system", content=SYSTEM_PROMPT), ChatMessage(role="user", content=idea)]


def draft2_messages(idea: str, draft1: str, answered: list[tuple[str, str]]) -> list[ChatMessage]:
    """The refinement prompt: the idea, draft 1 and each (question, answer) pair."""
    clarifications = "\n".join(f"- {q} {a}" for q, a in answered)
    user = (
        f"My idea: {idea}\n\nYour first draft:\n{draft1}\n\n"
        f"My clarifications:\n{clarifications}\n\n"
        "Write an improved second draft that follows every clarification."
    )
    return [ChatMessage(role="system", content=SYSTEM_PROMPT), ChatMessage(role="user", content=user)]


def job_id_for(cause_id: str, kind: str) -> str:
    return derived_id(cause_id, "job", kind)


def decide_submit(state: ThreadState | None, cmd: SubmitIdea, limits: Limits, now: datetime) -> list[Event]:
    """Open the thread and queue draft 1 at once ("always keep moving"). A thread that exists already
    (a redelivered command) yields nothing."""
    if state is not None:
        return []
    corr = cmd.correlation_id or cmd.command_id
    max_q = limits.max_questions if cmd.max_questions is None else max(0, cmd.max_questions)
    return [
        ThreadOpened(**_envelope(cmd.command_id, "thread_opened", cmd.thread_id, corr, now),
                     idea=cmd.idea, channel=cmd.channel, user_id=cmd.user_id, origin=dict(cmd.origin),
                     max_questions=max_q, answer_timeout_s=limits.answer_timeout_s, project=cmd.project,
                     private=cmd.private, priority=cmd.priority),
        JobQueued(**_envelope(cmd.command_id, "job_queued", cmd.thread_id, corr, now),
                  job_id=job_id_for(cmd.command_id, "draft1"), kind="draft1",
                  messages=draft1_messages(cmd.idea), max_tokens=limits.max_tokens,
                  temperature=limits.temperature, priority=cmd.priority, private=cmd.private,
                  project=cmd.project),
    ]


def decide_answers(state: ThreadState | None, cmd: AnswerQuestions, limits: Limits, now: datetime) -> list[Event]:
    """Record the answers to known questions and queue draft 2. Ignored unless the thread awaits answers
    and at least one non-empty answer matches one of its questions."""
    if state is None or state.status != AWAITING_ANSWERS or state.draft1 is None:
        return []
    known = {q.question_id: q for q in state.questions}
    answers = [Answer(question_id=a.question_id, text=a.text.strip())
               for a in cmd.answers if a.question_id in known and a.text.strip()]
    if not answers:
        return []
    answered = [(known[a.question_id].text, a.text) for a in answers]
    corr = state.correlation_id
    return [
        AnswersRecorded(**_envelope(cmd.command_id, "answers_recorded", state.thread_id, corr, now), answers=answers),
        JobQueued(**_envelope(cmd.command_id, "job_queued", state.thread_id, corr, now),
                  job_id=job_id_for(cmd.command_id, "draft2"), kind="draft2",
                  messages=draft2_messages(state.idea, state.draft1, answered),
                  max_tokens=limits.max_tokens, temperature=limits.temperature, priority=state.priority,
                  private=state.private, project=state.project),
    ]


def decide_rate(state: ThreadState | None, cmd: RateThread, now: datetime) -> list[Event]:
    """Record the user's 1-5 rating of a completed thread's final draft; ignored for an unknown or unfinished
    thread (the gateway answers 404/409 before publishing)."""
    if state is None or state.status != COMPLETED:
        return []
    return [ThreadRated(**_envelope(cmd.command_id, "thread_rated", state.thread_id, state.correlation_id, now),
                        rating=cmd.rating, draft_number=state.final_draft_number or 1, comment=cmd.comment.strip())]


def decide_close_window(state: ThreadState | None, cmd: CloseAnswerWindow, now: datetime) -> list[Event]:
    """The answer window elapsed: complete on draft 1 if the thread still waits for answers."""
    if state is None or state.status != AWAITING_ANSWERS:
        return []
    return [ThreadCompleted(**_envelope(cmd.command_id, "thread_completed", state.thread_id,
                                        state.correlation_id, now),
                            final_draft_number=1, reason="answer_timeout")]


def react_execution_completed(state: ThreadState | None, ev: ExecutionCompleted, now: datetime) -> list[Event]:
    """Present the draft a finished job produced; draft 2 also completes the thread."""
    if state is None or ev.job_id not in state.jobs or state.status in FINAL:
        return []
    job = state.jobs[ev.job_id]
    number = 2 if job.kind == "draft2" else 1
    if (number == 1 and state.draft1 is not None) or (number == 2 and state.draft2 is not None):
        return []
    env = _envelope(ev.event_id, "draft_presented", state.thread_id, state.correlation_id, now)
    events: list[Event] = [DraftPresented(**env, job_id=ev.job_id, draft_number=number, text=ev.text,
                                          backend=ev.backend, model=ev.model, prompt_tokens=ev.prompt_tokens,
                                          completion_tokens=ev.completion_tokens, latency_ms=ev.latency_ms)]
    if number == 2:
        events.append(ThreadCompleted(**_envelope(ev.event_id, "thread_completed", state.thread_id,
                                                  state.correlation_id, now),
                                      final_draft_number=2, reason="answered"))
    elif state.max_questions == 0:
        events.append(ThreadCompleted(**_envelope(ev.event_id, "thread_completed", state.thread_id,
                                                  state.correlation_id, now),
                                      final_draft_number=1, reason="no_questions"))
    return events


def react_execution_abandoned(state: ThreadState | None, ev: ExecutionAbandoned, now: datetime) -> list[Event]:
    """The router gave up on a job (retries and failover exhausted, or no backend): record it; a failed
    draft 1 fails the thread, a failed draft 2 completes it on draft 1."""
    if state is None or ev.job_id not in state.jobs or state.status in FINAL:
        return []
    job = state.jobs[ev.job_id]
    corr = state.correlation_id
    events: list[Event] = [JobFailed(**_envelope(ev.event_id, "job_failed", state.thread_id, corr, now),
                                     job_id=ev.job_id, error_code=ev.error_code, message=ev.message)]
    if job.kind == "draft1":
        events.append(ThreadFailed(**_envelope(ev.event_id, "thread_failed", state.thread_id, corr, now),
                                   error_code=ev.error_code, message=f"draft 1 failed: {ev.message}"))
    else:
        events.append(ThreadCompleted(**_envelope(ev.event_id, "thread_completed", state.thread_id, corr, now),
                                      final_draft_number=1, reason="draft2_failed"))
    return events


def react_questions_proposed(state: ThreadState | None, ev: QuestionsProposed, now: datetime) -> list[Event]:
    """No question worth asking: the thread completes on draft 1."""
    if state is None or ev.questions or state.status != AWAITING_ANSWERS:
        return []
    return [ThreadCompleted(**_envelope(ev.event_id, "thread_completed", state.thread_id,
                                        state.correlation_id, now),
                            final_draft_number=1, reason="no_questions")]

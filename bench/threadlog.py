"""A realistic ``HERMES_EVENTS`` log for the replay benchmark: complete thread stories as the services write them.

Every event is built the way its service builds it, mostly by calling that service's own pure code, so ids,
causation chains and payloads match a real log:

* orchestrator decisions (``hermes_orchestrator.domain``): ``decide_submit`` (ThreadOpened + JobQueued draft 1),
  ``react_execution_completed`` (DraftPresented, ThreadCompleted), ``react_questions_proposed``,
  ``decide_answers`` (AnswersRecorded + JobQueued draft 2), ``decide_close_window`` (answer timeout),
  ``decide_rate`` (ThreadRated), ``decide_submit_workflow`` / ``react_step_completed`` (workflows);
* the learner's ``domain.choose`` over its seed templates (QuestionsProposed, id from the draft's event id);
* the edge's ``started_event`` / ``completed_event`` / ``failed_event`` (ids from the request id);
* the router's ids (``selected_id_for``, ``request_id_for``, ``cost_recorded-<attempt>``) and
  ``hermes_proto.costs.cost_cents``; the router's candidates and reasons follow ``hermes_router.domain.select``'s
  wording but are not scored (no registry).

Thread ids and command ids are random UUID4 hex as the gateway's ``new_id`` makes them, drawn from a seeded
generator so a given seed yields the same log. Times are simulated: threads open at a steady rate over
``span_days`` ending now, and each story advances its own clock by plausible delays (model calls 2-20 s, answers
within minutes). The stories are merged by ``occurred_at``, so threads interleave in the log as they would.
The shares of each path (workflows, answered, rated, failover) are parameters of :class:`Mix`.
"""

from __future__ import annotations

import heapq
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from hermes_proto.base import Event
from hermes_proto.commands import AnswerQuestions, CloseAnswerWindow, RateThread, SubmitIdea, SubmitWorkflow
from hermes_proto.costs import cost_cents, estimate_prompt_tokens, estimate_tokens
from hermes_proto.events import (
    Answer,
    BackendCandidate,
    BackendSelected,
    CostRecorded,
    DraftPresented,
    ExecutionCompleted,
    JobQueued,
    QuestionsProposed,
    ThreadCompleted,
    WorkflowStep,
)
from hermes_proto.execution import ExecutionRequested
from hermes_proto.ids import derived_id

from hermes_edge.domain import ErrorCode, ModelCallFailed, ModelReply, completed_event, failed_event, started_event
from hermes_learner import domain as learner
from hermes_learner.templates import SEED_TEMPLATES
from hermes_orchestrator import domain as orch
from hermes_router.handlers import request_id_for, selected_id_for

# The orchestrator's limits with its settings' defaults (OrchestratorSettings), as bootstrap.run builds them.
LIMITS = orch.Limits(
    max_questions=5,
    answer_timeout_s=600.0,
    max_tokens=256,
    temperature=0.7,
    job_timeout_s=3600.0,
    workflow_max_steps=10,
    workflow_timeout_s=3600.0,
)


@dataclass(frozen=True)
class Backend:
    """A backend as the stories use it: prices in cents per million tokens; local backends take private jobs."""

    name: str
    model: str
    price_in: float
    price_out: float
    local: bool


BACKENDS = (
    Backend("talos", "llama3.1:8b", 0.0, 0.0, True),
    Backend("server_models", "qwen2.5:32b", 0.0, 0.0, True),
    Backend("remote_api", "anthropic/claude-3.5-haiku", 80.0, 400.0, False),
)


@dataclass(frozen=True)
class Mix:
    """Shares (0-1) of the story paths: ``workflow`` of threads are workflows (3-5 steps); of the idea threads
    with questions, ``answered`` get answers and a draft 2 (the rest time out on draft 1); ``rated`` of the
    completed threads are rated; ``failover`` of the jobs fail once on their first backend and succeed on
    another; ``private`` of the threads keep their jobs on local backends; ``no_questions`` of the idea threads
    are submitted with ``max_questions`` 0 (completed on draft 1, the learner proposes nothing)."""

    workflow: float = 0.12
    answered: float = 0.6
    rated: float = 0.35
    failover: float = 0.03
    private: float = 0.1
    no_questions: float = 0.1


IDEAS = (
    "help me plan a small vegetable garden on my {place} balcony",
    "I want to learn {lang} in {n} months, where do I start",
    "write a python script that renames my photos by date",
    "plan a {n}-day trip to {place} on a budget",
    "should I buy or lease a car for a {n} km commute",
    "something for my sister's birthday party, maybe a theme",
    "build a telegram bot that reminds me to water the plants",
    "write a short story about a lighthouse keeper and a robot",
    "research the market for second-hand bikes in {place}",
    "a weekly workout routine I can do at home in {n} minutes",
    "draft an email to my landlord about the broken heating",
    "help me organise a team offsite for {n} people",
    "compare postgres vs sqlite for a small web app",
    "teach me the basics of sourdough baking",
    "ideas for a logo for my {place} coffee shop",
)
PLACES = ("Lisbon", "Kyoto", "Berlin", "city", "rooftop", "Oslo", "Porto", "Vienna")
LANGS = ("Spanish", "Japanese", "Rust", "German", "statistics")
WORDS = (
    "plan",
    "step",
    "first",
    "then",
    "water",
    "budget",
    "week",
    "choose",
    "simple",
    "start",
    "check",
    "list",
    "soil",
    "daily",
    "light",
    "goal",
    "time",
    "cost",
    "option",
    "small",
    "compare",
    "schedule",
    "measure",
    "review",
    "draft",
    "clear",
    "useful",
    "practical",
    "order",
    "space",
    "test",
    "repeat",
    "note",
    "keep",
)
ANSWERS = (
    "A step-by-step plan",
    "A small budget",
    "This month",
    "Just for fun",
    "No preference",
    "Around 50 euros",
    "Two hours a week",
    "Beginner",
    "For my family",
    "Keep it short",
)
WORKFLOW_SHAPES = (  # (title, [(step_id, prompt, depends_on)])
    (
        "Blog post",
        [
            ("research", "Collect facts about {topic}", []),
            ("outline", "Outline a post", ["research"]),
            ("draft", "Write the post", ["outline"]),
        ],
    ),
    (
        "Market scan",
        [
            ("sources", "List sources about {topic}", []),
            ("prices", "Summarise prices", ["sources"]),
            ("trends", "Summarise trends", ["sources"]),
            ("report", "Write a report", ["prices", "trends"]),
        ],
    ),
    (
        "Release notes",
        [
            ("changes", "List the changes in {topic}", []),
            ("risks", "List the risks", []),
            ("notes", "Write release notes", ["changes", "risks"]),
            ("email", "Announce it", ["notes"]),
            ("faq", "Write an FAQ", ["notes"]),
        ],
    ),
)


class Stories:
    """Builds thread stories (lists of events in the order their services append them) from one seeded
    generator. :meth:`thread` returns one story starting at a given time."""

    def __init__(self, seed: int, mix: Mix) -> None:
        self.rng = random.Random(seed)
        self.mix = mix

    # ---- small helpers ----------------------------------------------------------------------------------

    def new_id(self) -> str:
        """A UUID4 hex like ``hermes_proto.ids.new_id``, from the seeded generator."""
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def later(self, t: datetime, low_s: float, high_s: float) -> datetime:
        return t + timedelta(seconds=self.rng.uniform(low_s, high_s))

    def text(self, low: int, high: int) -> str:
        """Draft-like prose of ``low``-``high`` words (a 256-token draft is ~150-200 words)."""
        words = self.rng.choices(WORDS, k=self.rng.randint(low, high))
        sentences = [" ".join(words[i : i + 12]).capitalize() + "." for i in range(0, len(words), 12)]
        return " ".join(sentences)

    def idea(self) -> str:
        template = self.rng.choice(IDEAS)
        return template.format(place=self.rng.choice(PLACES), lang=self.rng.choice(LANGS), n=self.rng.randint(2, 30))

    # ---- one job: router selection, edge execution, router cost ------------------------------------------

    def run_job(
        self, queued: JobQueued, t: datetime, private: bool
    ) -> tuple[list[Event], ExecutionCompleted, datetime]:
        """The router's BackendSelected, the edge's ExecutionStarted / (ExecutionFailed + failover) /
        ExecutionCompleted and the router's CostRecorded for ``queued``; returns (events, completion, time)."""
        events: list[Event] = []
        eligible = [b for b in BACKENDS if b.local or not private]
        attempt, failed_on = 1, None
        fails = self.rng.random() < self.mix.failover and len(eligible) > 1
        while True:
            choices = [b for b in eligible if b.name != failed_on]
            backend = self.rng.choice(choices)
            t = self.later(t, 0.002, 0.05)
            selected = self.selection(queued, backend, eligible, attempt, failed_on, t)
            request = ExecutionRequested(
                request_id=request_id_for(queued.event_id, attempt),
                thread_id=queued.aggregate_id,
                job_id=queued.job_id,
                backend=backend.name,
                model=backend.model,
                messages=queued.messages,
                max_tokens=queued.max_tokens,
                temperature=queued.temperature,
                correlation_id=queued.correlation_id,
                requested_at=t,
            )
            t = self.later(t, 0.003, 0.08)
            events += [selected, started_event(request, backend.name, backend.model, attempt, t)]
            if fails and attempt == 1:
                t = self.later(t, 0.5, 5.0)
                error = ModelCallFailed(
                    ErrorCode.HTTP_5XX, "HTTP 503: upstream overloaded", latency_ms=self.rng.uniform(300, 5000)
                )
                events.append(failed_event(request, backend.name, backend.model, error, t))
                attempt, failed_on = 2, backend.name
                continue
            return self.completion(queued, request, backend, attempt, events, t)

    def selection(
        self,
        queued: JobQueued,
        chosen: Backend,
        eligible: list[Backend],
        attempt: int,
        failed_on: str | None,
        t: datetime,
    ) -> BackendSelected:
        score = round(self.rng.uniform(0.55, 0.95), 4)
        prompt_tokens = estimate_prompt_tokens(queued.messages)
        estimate = cost_cents(prompt_tokens, queued.max_tokens, chosen.price_in, chosen.price_out)
        candidates = [
            BackendCandidate(
                backend=b.name,
                model=b.model,
                score=score if b is chosen else round(score - self.rng.uniform(0.01, 0.3), 4),
                rejected=None
                if b is chosen
                else (
                    "failed this job earlier"
                    if b.name == failed_on
                    else "private job: not a local backend"
                    if b not in eligible
                    else f"lower score than {chosen.name}"
                ),
                estimated_cost_cents=cost_cents(prompt_tokens, queued.max_tokens, b.price_in, b.price_out),
            )
            for b in BACKENDS
        ]
        job_type = "general" if queued.kind != "step" else "content"
        return BackendSelected(
            event_id=selected_id_for(queued.event_id, attempt),
            aggregate_id=queued.aggregate_id,
            occurred_at=t,
            correlation_id=queued.correlation_id,
            causation_id=queued.event_id,
            job_id=queued.job_id,
            backend=chosen.name,
            model=chosen.model,
            criteria="quality_first",
            candidates=candidates,
            reason=(
                f"score: {chosen.name} (quality_first score {score}, health healthy) among "
                f"{len(eligible) - (failed_on is not None)} eligible; job type {job_type}"
            ),
            attempt=attempt,
            strategy="score",
            job_type=job_type,
            project=queued.project,
            private=queued.private,
            estimated_cost_cents=estimate,
            price_in_cents_per_mtok=chosen.price_in,
            price_out_cents_per_mtok=chosen.price_out,
            failover_from=failed_on,
        )

    def completion(
        self,
        queued: JobQueued,
        request: ExecutionRequested,
        backend: Backend,
        attempt: int,
        events: list[Event],
        t: datetime,
    ) -> tuple[list[Event], ExecutionCompleted, datetime]:
        latency_ms = self.rng.uniform(2000, 20000)
        text = self.text(90, 190)
        reply = ModelReply(
            text=text,
            prompt_tokens=estimate_prompt_tokens(queued.messages),
            completion_tokens=estimate_tokens(text),
            latency_ms=latency_ms,
            first_token_ms=latency_ms * self.rng.uniform(0.05, 0.2),
            finish_reason="stop",
        )
        t += timedelta(milliseconds=latency_ms)
        done = completed_event(request, backend.name, backend.model, reply, t)
        t = self.later(t, 0.005, 0.2)
        cost = CostRecorded(
            event_id=derived_id(queued.event_id, f"cost_recorded-{attempt}"),
            aggregate_id=queued.aggregate_id,
            occurred_at=t,
            correlation_id=queued.correlation_id,
            causation_id=done.event_id,
            job_id=queued.job_id,
            backend=backend.name,
            model=backend.model,
            project=queued.project,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            cost_cents=cost_cents(reply.prompt_tokens, reply.completion_tokens, backend.price_in, backend.price_out),
        )
        return events + [done, cost], done, t

    # ---- stories ---------------------------------------------------------------------------------------

    def thread(self, t: datetime) -> list[Event]:
        """One complete thread opened at ``t``: a workflow or an idea thread, per :class:`Mix`."""
        return self.workflow(t) if self.rng.random() < self.mix.workflow else self.idea_thread(t)

    def finish_job(self, state: orch.ThreadState, queued: JobQueued, t: datetime) -> tuple[list[Event], datetime]:
        """Run ``queued`` and the orchestrator's reaction to its completion (``state`` as its read model
        shows it then: the job completed)."""
        events, done, t = self.run_job(queued, t, state.private)
        job = state.jobs[queued.job_id]
        job.status, job.text, job.closed_by = "completed", done.text, done.event_id  # as the projection records it
        t = self.later(t, 0.005, 0.1)
        return events + orch.react_execution_completed(state, done, t), t

    def idea_thread(self, t: datetime) -> list[Event]:
        thread_id, private = self.new_id(), self.rng.random() < self.mix.private
        submit = SubmitIdea(
            command_id=self.new_id(),
            issued_at=t,
            correlation_id=self.new_id(),
            thread_id=thread_id,
            idea=self.idea(),
            channel=self.rng.choice(("web", "api", "cli", "telegram")),
            project=self.rng.choice(("default", "home", "work")),
            private=private,
            priority=self.rng.choice((5, 5, 5, 3, 8)),
            max_questions=0 if self.rng.random() < self.mix.no_questions else None,
        )
        t = self.later(t, 0.005, 0.05)
        opened, queued = orch.decide_submit(None, submit, LIMITS, t)
        state = orch.ThreadState(
            thread_id=thread_id,
            idea=opened.idea,
            status=orch.DRAFTING,
            correlation_id=opened.correlation_id,
            max_questions=opened.max_questions,
            project=opened.project,
            private=private,
            priority=opened.priority,
        )
        state.jobs[queued.job_id] = orch.JobState(queued.job_id, "draft1", "queued")
        story: list[Event] = [opened, queued]
        reaction, t = self.finish_job(state, queued, t)
        story += reaction
        draft = next(e for e in reaction if isinstance(e, DraftPresented))
        state.draft1, state.status = draft.text, orch.AWAITING_ANSWERS
        if isinstance(reaction[-1], ThreadCompleted):  # max_questions 0: the learner skips the thread
            state.status, state.final_draft_number = orch.COMPLETED, 1
            return story + self.rating(state, story[-1].occurred_at)
        t = self.later(t, 0.01, 0.3)
        proposed = self.questions(state, draft, t)
        story.append(proposed)
        closing = orch.react_questions_proposed(state, proposed, t)
        if closing:
            story += closing
            state.status, state.final_draft_number = orch.COMPLETED, 1
        else:
            state.questions = [orch.QuestionState(q.question_id, q.text) for q in proposed.questions]
            story += self.answers_or_timeout(state, draft, t)
        return story + self.rating(state, story[-1].occurred_at)

    def questions(self, state: orch.ThreadState, draft: DraftPresented, t: datetime) -> QuestionsProposed:
        """The learner's reaction to draft 1 (``Learner._proposed`` with ``domain.choose``, no statistics yet)."""
        decision = learner.choose(
            state.idea, draft.text, SEED_TEMPLATES, {}, min(state.max_questions, 5), draft_event_id=draft.event_id
        )
        return QuestionsProposed(
            event_id=derived_id(draft.event_id, "questions_proposed"),
            aggregate_id=state.thread_id,
            occurred_at=t,
            correlation_id=draft.correlation_id,
            causation_id=draft.event_id,
            questions=decision.questions,
            idea_type=decision.idea_type,
            clarity=decision.clarity,
            reason=decision.reason,
        )

    def answers_or_timeout(self, state: orch.ThreadState, draft: DraftPresented, t: datetime) -> list[Event]:
        if self.rng.random() >= self.mix.answered:
            t = draft.occurred_at + timedelta(seconds=LIMITS.answer_timeout_s + self.rng.uniform(0, 0.5))
            close = CloseAnswerWindow(
                command_id=derived_id(state.thread_id, "close_answer_window"),
                issued_at=t,
                thread_id=state.thread_id,
                correlation_id=state.correlation_id,
            )
            closing = orch.decide_close_window(state, close, t)
            state.status, state.final_draft_number = orch.COMPLETED, 1
            return closing
        t = self.later(t, 20, 300)
        picked = self.rng.sample(state.questions, self.rng.randint(1, len(state.questions)))
        answer = AnswerQuestions(
            command_id=self.new_id(),
            issued_at=t,
            correlation_id=self.new_id(),
            thread_id=state.thread_id,
            answers=[Answer(question_id=q.question_id, text=self.rng.choice(ANSWERS)) for q in picked],
        )
        recorded, queued = orch.decide_answers(state, answer, LIMITS, t)
        state.status = orch.REFINING
        state.jobs[queued.job_id] = orch.JobState(queued.job_id, "draft2", "queued")
        reaction, t = self.finish_job(state, queued, t)
        state.status, state.final_draft_number = orch.COMPLETED, 2
        return [recorded, queued, *reaction]

    def rating(self, state: orch.ThreadState, t: datetime) -> list[Event]:
        if state.status != orch.COMPLETED or self.rng.random() >= self.mix.rated:
            return []
        t = self.later(t, 5, 600)
        rate = RateThread(
            command_id=self.new_id(),
            issued_at=t,
            correlation_id=self.new_id(),
            thread_id=state.thread_id,
            rating=self.rng.choices((1, 2, 3, 4, 5), weights=(1, 1, 3, 5, 4))[0],
            comment=self.rng.choice(("", "", "great", "too long", "helpful, thanks")),
        )
        return orch.decide_rate(state, rate, t)

    def workflow(self, t: datetime) -> list[Event]:
        """A workflow thread: planned, its steps run as their dependencies complete, then completed."""
        title, shape = self.rng.choice(WORKFLOW_SHAPES)
        topic = self.rng.choice(PLACES)
        steps = [
            WorkflowStep(step_id=sid, prompt=prompt.format(topic=topic), depends_on=deps) for sid, prompt, deps in shape
        ]
        thread_id = self.new_id()
        submit = SubmitWorkflow(
            command_id=self.new_id(),
            issued_at=t,
            correlation_id=self.new_id(),
            thread_id=thread_id,
            title=f"{title}: {topic}",
            steps=steps,
            project=self.rng.choice(("default", "work")),
        )
        t = self.later(t, 0.005, 0.05)
        story = orch.decide_submit_workflow(None, submit, LIMITS, t)
        opened, planned = story[0], story[1]
        state = orch.ThreadState(
            thread_id=thread_id,
            idea=opened.idea,
            status=orch.DRAFTING,
            correlation_id=opened.correlation_id,
            max_questions=0,
            project=opened.project,
            kind="workflow",
            steps={s.step_id: orch.StepState(s, orch.step_job_id(thread_id, s.step_id)) for s in planned.steps},
        )
        waiting: list[JobQueued] = []

        def queue(events: list[Event]) -> None:  # as the read model shows a queued step
            for e in events:
                if isinstance(e, JobQueued):
                    state.jobs[e.job_id] = orch.JobState(e.job_id, "step", "queued", e.step_id)
                    state.steps[e.step_id or ""].status = "queued"
                    waiting.append(e)

        queue(story)
        while waiting:
            queued = waiting.pop(0)
            reaction, t = self.finish_job(state, queued, t)
            state.steps[queued.step_id or ""].status = "completed"
            queue(reaction)
            story += reaction
        if not isinstance(story[-1], ThreadCompleted):
            raise RuntimeError(f"workflow story did not complete: {[e.type_name() for e in story]}")
        return story


@dataclass
class Log:
    """The generated log: events in append order, and per event type how many."""

    events: list[Event] = field(default_factory=list)
    threads: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            out[e.type_name()] = out.get(e.type_name(), 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def build_log(min_events: int, seed: int = 7, mix: Mix = Mix(), span_days: float = 7.0) -> Log:
    """At least ``min_events`` events: whole stories, opened at a steady rate over ``span_days`` ending now,
    merged by ``occurred_at`` (a story's own order kept)."""
    stories = Stories(seed, mix)
    drafted: list[list[Event]] = []
    total = 0
    while total < min_events:
        drafted.append(stories.thread(datetime.now(UTC)))  # re-timed below, once the count is known
        total += len(drafted[-1])
    start = datetime.now(UTC) - timedelta(days=span_days)
    gap = timedelta(days=span_days) / len(drafted)
    log = Log()
    streams = [_timed(story, start + gap * n, n) for n, story in enumerate(drafted)]
    log.threads = [story[0].aggregate_id for story in drafted]
    for when, _, _, event in heapq.merge(*streams):
        log.events.append(msgspec.structs.replace(event, occurred_at=when))
    if len({e.event_id for e in log.events}) != len(log.events):  # JetStream would drop the repeats silently
        raise RuntimeError("two events of the generated log share an event id")
    return log


def _timed(story: list[Event], opened_at: datetime, n: int) -> Iterator[tuple[datetime, int, int, Event]]:
    """``(time, story number, index, event)`` with the story moved to open at ``opened_at``."""
    shift = opened_at - story[0].occurred_at
    return ((e.occurred_at + shift, n, i, e) for i, e in enumerate(story))

"""The orchestrator's fold: ``reduce(evolve, events, None)`` is the decision state, and it equals what the read model
holds after the same events (the snapshot the in-memory fold starts from). Stories are made by the domain's own
decisions with random choices (cancellations, timeouts, failovers, abandonments, chats, workflows with failed steps,
stale and repeated outcomes), so both folds see what a live log holds."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from functools import reduce
from pathlib import Path

import pytest
from sqlmodel import Session

from hermes_proto import threads
from hermes_proto.base import ChatMessage, Event
from hermes_proto.commands import (
    AnswerQuestions,
    CancelJob,
    CloseAnswerWindow,
    ExpireWorkflow,
    RateThread,
    SubmitChat,
    SubmitIdea,
    SubmitWorkflow,
)
from hermes_proto.events import (
    Answer,
    BackendSelected,
    CostRecorded,
    ExecutionAbandoned,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    JobDeferred,
    PreferenceForgotten,
    PreferenceLearned,
    Question,
    QuestionsProposed,
    SettingChanged,
    WorkflowStep,
)

from hermes_orchestrator import domain, readmodel, snapshot
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.state import evolve

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LIMITS = domain.Limits(job_timeout_s=600.0, workflow_timeout_s=1800.0, max_questions=4)


class Story:
    """Events of several threads, made one decision at a time with a random hand, as the services would."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.events: list[Event] = []
        self.states: dict[str, domain.ThreadState] = {}
        self.clock = T0
        self.n = 0

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=self.rng.uniform(0.1, 30))
        return self.clock

    def id(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def add(self, events: list[Event]) -> None:
        for e in events:
            self.events.append(e)
            if e.aggregate_type == "thread":
                self.states[e.aggregate_id] = evolve(self.states.get(e.aggregate_id), e)
            if self.rng.random() < 0.05:  # a producer repeats itself (past the dedup window)
                self.events.append(e)
                if e.aggregate_type == "thread":
                    evolve(self.states[e.aggregate_id], e)

    def env(self, thread_id: str, job_id: str) -> dict:
        return dict(
            event_id=self.id("x"), aggregate_id=thread_id, occurred_at=self.tick(), correlation_id="c", job_id=job_id
        )

    def run_job(self, thread_id: str, job_id: str) -> None:
        """Select, start and end one job: completed, failed over, abandoned, cancelled or timed out."""
        for attempt in range(1, 4):
            self.add(
                [
                    BackendSelected(
                        **self.env(thread_id, job_id), backend="talos", model="m", reason="score", attempt=attempt
                    )
                ]
            )
            if self.rng.random() < 0.2:
                self.add([JobDeferred(**self.env(thread_id, job_id), reason="saturated")])
            self.add([ExecutionStarted(**self.env(thread_id, job_id), backend="talos", model="m")])
            roll = self.rng.random()
            if roll < 0.55:
                done = ExecutionCompleted(
                    **self.env(thread_id, job_id),
                    backend="talos",
                    model="m",
                    text=f"result {job_id}",
                    prompt_tokens=5,
                    completion_tokens=7,
                    latency_ms=12.0,
                )
                self.add(
                    [
                        done,
                        CostRecorded(
                            **self.env(thread_id, job_id),
                            backend="talos",
                            model="m",
                            prompt_tokens=5,
                            completion_tokens=7,
                            cost_cents=0.1,
                        ),
                    ]
                )
                self.add(domain.react_execution_completed(self.states[thread_id], done, self.tick()))
                if self.rng.random() < 0.1:  # a stale copy of the outcome, after the reaction
                    self.add([done])
                return
            if roll < 0.75:
                self.add(
                    [
                        ExecutionFailed(
                            **self.env(thread_id, job_id),
                            backend="talos",
                            model="m",
                            error_code="timeout",
                            message="slow",
                        )
                    ]
                )
                continue
            if roll < 0.85:
                abandoned = ExecutionAbandoned(**self.env(thread_id, job_id), error_code="no_backend", message="x")
                self.add([abandoned])
                self.add(domain.react_execution_abandoned(self.states[thread_id], abandoned, self.tick()))
                return
            reason = self.rng.choice(["user", "timeout"])
            self.add(
                domain.decide_cancel(
                    self.states[thread_id],
                    CancelJob(
                        command_id=self.id("c"), issued_at=self.clock, thread_id=thread_id, job_id=job_id, reason=reason
                    ),
                    self.tick(),
                )
            )
            if self.rng.random() < 0.5:  # the cancelled call ran anyway
                late = ExecutionCompleted(
                    **self.env(thread_id, job_id),
                    backend="talos",
                    model="m",
                    text="late",
                    prompt_tokens=1,
                    completion_tokens=1,
                    latency_ms=1.0,
                )
                self.add([late])
                self.add(domain.react_execution_completed(self.states[thread_id], late, self.tick()))
            return

    def open_jobs(self, thread_id: str) -> list[str]:
        return [j.job_id for j in self.states[thread_id].jobs.values() if threads.cancellable(j.status)]

    def idea(self) -> None:
        thread_id = self.id("t")
        cmd = SubmitIdea(
            command_id=self.id("c"),
            issued_at=self.clock,
            thread_id=thread_id,
            idea="a garden",
            max_questions=self.rng.choice([None, 0, 2]),
        )
        self.add(domain.decide_submit(None, cmd, LIMITS, self.tick()))
        self.run_job(thread_id, self.open_jobs(thread_id)[0])
        state = self.states[thread_id]
        if state.status != threads.AWAITING_ANSWERS:
            return self.rate(thread_id)
        draft = next(
            e for e in reversed(self.events) if e.type_name() == "draft_presented" and e.aggregate_id == thread_id
        )
        for _ in range(self.rng.choice([1, 1, 2])):  # a second proposal changes nothing
            questions = [
                Question(question_id=self.id("q"), template_id="t", category="intent", text=f"q{i}?")
                for i in range(self.rng.choice([0, 3, 6]))
            ]
            proposed = QuestionsProposed(
                event_id=self.id("x"),
                aggregate_id=thread_id,
                occurred_at=self.tick(),
                correlation_id="c",
                causation_id=draft.event_id,
                questions=questions,
                idea_type="plan",
                clarity=0.5,
            )
            self.add([proposed])
            self.add(domain.react_questions_proposed(self.states[thread_id], proposed, self.tick()))
        state = self.states[thread_id]
        if state.status == threads.AWAITING_ANSWERS and state.questions and self.rng.random() < 0.7:
            answers = [
                Answer(question_id=q.question_id, text="yes") for q in state.questions if self.rng.random() < 0.7
            ] or [Answer(question_id=state.questions[0].question_id, text="x")]
            self.add(
                domain.decide_answers(
                    state,
                    AnswerQuestions(
                        command_id=self.id("c"), issued_at=self.clock, thread_id=thread_id, answers=answers
                    ),
                    LIMITS,
                    self.tick(),
                )
            )
            for job_id in self.open_jobs(thread_id):
                self.run_job(thread_id, job_id)
        self.add(
            domain.decide_close_window(
                self.states[thread_id],
                CloseAnswerWindow(command_id=self.id("c"), issued_at=self.clock, thread_id=thread_id),
                self.tick(),
            )
        )
        self.rate(thread_id)

    def rate(self, thread_id: str) -> None:
        for _ in range(self.rng.choice([0, 1, 2])):
            self.add(
                domain.decide_rate(
                    self.states[thread_id],
                    RateThread(
                        command_id=self.id("c"),
                        issued_at=self.clock,
                        thread_id=thread_id,
                        rating=self.rng.randint(1, 5),
                    ),
                    self.tick(),
                )
            )

    def chat(self) -> None:
        thread_id = self.id("s")
        for turn in range(self.rng.randint(1, 4)):
            cmd = SubmitChat(
                command_id=self.id("c"),
                issued_at=self.clock,
                thread_id=thread_id,
                job_id=f"{thread_id}-j{turn}",
                session_key="k",
                messages=[ChatMessage(role="user", content="hi")],
            )
            self.add(domain.decide_chat(self.states.get(thread_id), cmd, LIMITS, self.tick()))
            self.run_job(thread_id, cmd.job_id)

    def workflow(self) -> None:
        thread_id = self.id("w")
        steps = [
            WorkflowStep(step_id="a", prompt="one"),
            WorkflowStep(step_id="b", prompt="two", depends_on=["a"]),
            WorkflowStep(step_id="c", prompt="three"),
            WorkflowStep(step_id="d", prompt="four", depends_on=["b", "c"]),
        ]
        self.add(
            domain.decide_submit_workflow(
                None,
                SubmitWorkflow(command_id=self.id("c"), issued_at=self.clock, thread_id=thread_id, steps=steps),
                LIMITS,
                self.tick(),
            )
        )
        while threads.is_open(self.states[thread_id].status) and self.open_jobs(thread_id):
            if self.rng.random() < 0.1:
                self.add(
                    domain.decide_expire_workflow(
                        self.states[thread_id],
                        ExpireWorkflow(command_id=self.id("c"), issued_at=self.clock, thread_id=thread_id),
                        self.tick(),
                    )
                )
                break
            self.run_job(thread_id, self.rng.choice(self.open_jobs(thread_id)))

    def noise(self) -> None:
        """Events the thread fold ignores but the read model keeps: settings, preferences, an unknown thread."""
        key = "hermes.draft.max_tokens"
        self.add(
            [
                SettingChanged(
                    event_id=self.id("x"),
                    aggregate_id=key.replace(".", "-"),
                    occurred_at=self.tick(),
                    correlation_id="c",
                    key=key,
                    value=self.rng.choice([None, "300"]),
                    by="admin",
                )
            ]
        )
        pref = self.id("p")
        self.add(
            [
                PreferenceLearned(
                    event_id=self.id("x"),
                    aggregate_id=pref,
                    occurred_at=self.tick(),
                    correlation_id="c",
                    user_id="ann",
                    category="constraint",
                    key="budget",
                    value="50 euros",
                    votes={"50 euros": 3.0},
                    confidence=0.9,
                    stability=1.0,
                    observations=3,
                    source="answer",
                    evidence="answer",
                )
            ]
        )
        if self.rng.random() < 0.5:
            self.add(
                [
                    PreferenceForgotten(
                        event_id=self.id("x"),
                        aggregate_id=pref,
                        occurred_at=self.tick(),
                        correlation_id="c",
                        user_id="ann",
                        category="constraint",
                        key="budget",
                    )
                ]
            )
        self.add(
            [
                ExecutionCompleted(
                    **self.env("nobody", "j"),
                    backend="b",
                    model="m",
                    text="t",
                    prompt_tokens=1,
                    completion_tokens=1,
                    latency_ms=1.0,
                )
            ]
        )


def stories(seed: int, n: int = 40) -> Story:
    story = Story(random.Random(seed))
    for _ in range(n):
        story.rng.choice([story.idea, story.idea, story.chat, story.workflow, story.noise])()
    return story


def test_the_fold_is_a_reduce_of_the_events() -> None:
    story = stories(1)
    by_thread: dict[str, list[Event]] = {}
    for e in story.events:
        if e.aggregate_type == "thread":
            by_thread.setdefault(e.aggregate_id, []).append(e)
    for thread_id, events in by_thread.items():
        assert reduce(evolve, events, None) == story.states.get(thread_id)
    assert evolve(None, story.events[1]) is None  # before its ThreadOpened, a thread has no state


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_the_read_model_holds_the_fold(tmp_path: Path, seed: int) -> None:
    """After every batch of a random story, each thread's state read back from the rows equals the fold."""
    story = stories(seed)
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    store = readmodel.row_store(engine)
    rng = random.Random(seed)
    applied = 0
    while applied < len(story.events):
        size = rng.randint(1, 40)
        readmodel.apply_events(store, story.events[applied : applied + size], applied + size)
        applied += size
        folded: dict[str, domain.ThreadState] = {}
        for e in story.events[:applied]:
            if e.aggregate_type == "thread":
                folded[e.aggregate_id] = evolve(folded.get(e.aggregate_id), e)
        with Session(engine) as session:
            for thread_id, state in folded.items():
                assert snapshot.load_state(session, thread_id) == state, thread_id

    # the snapshot the process starts from: open threads in full, ended ones by id, preferences and settings
    fold = ThreadFold.load(engine)
    assert fold.states == {t: s for t, s in story.states.items() if s is not None and threads.is_open(s.status)}
    assert fold.closed == {t for t, s in story.states.items() if s is not None and threads.is_final(s.status)}
    replayed = ThreadFold(engine, snapshot.Snapshot({}, set(), [], {}))
    replayed.apply(list(enumerate(story.events, 1)), len(story.events))
    assert replayed.states == {t: s for t, s in story.states.items() if s is not None}
    assert replayed.settings == fold.settings
    now = story.clock
    assert replayed.usable_preferences("ann", 0.5, now) == fold.usable_preferences("ann", 0.5, now)
    engine.dispose()


def test_ended_threads_leave_memory_once_stored_and_are_read_back(tmp_path: Path) -> None:
    story = stories(7, n=12)
    engine = readmodel.make_engine(f"sqlite:///{tmp_path / 'o.db'}")
    fold = ThreadFold(engine, snapshot.Snapshot({}, set(), [], {}))
    fold.apply(list(enumerate(story.events, 1)), len(story.events))
    ended = {t for t, s in story.states.items() if s is not None and threads.is_final(s.status)}
    assert ended and ended <= set(fold.states)
    readmodel.apply_events(readmodel.row_store(engine), story.events, len(story.events))
    fold.stored(len(story.events))
    assert not ended & set(fold.states) and fold.closed == ended
    import asyncio

    for thread_id in ended:
        assert asyncio.run(fold.state(thread_id)) == story.states[thread_id]
    assert asyncio.run(fold.state("never-seen")) is None
    engine.dispose()

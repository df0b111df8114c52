"""The learner: its pure decisions, its read model on a real SQLite file, and the service as a real
process on a real JetStream server (the test plays the orchestrator on the wire, except in the last test,
where the real orchestrator and router run too and the test plays only the edge)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import httpx
import msgspec
import pytest
from conftest import open_event, wait_until
from fakes.edge_beats import EdgeBeats
from procs import ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from hermes_proto import subjects
from hermes_proto.bus import EventStore
from hermes_proto.codec import decode_execution_request, encode
from hermes_proto.commands import AnswerQuestions, SubmitIdea
from hermes_proto.events import (
    QUESTION_CATEGORIES,
    TEMPLATE_TIMINGS,
    Answer,
    AnswersRecorded,
    DraftPresented,
    ExecutionCompleted,
    Question,
    QuestionsProposed,
    ThreadCompleted,
    ThreadOpened,
    ThreadRated,
)
from hermes_proto.ids import derived_id, new_id, utcnow

from hermes_cli.natsserver import free_port
from hermes_learner import domain, ideas, readmodel, tables
from hermes_learner.templates import SEED_TEMPLATES

VAGUE = "help me plan a vegetable garden on my balcony"
CLEAR = (
    "I want to learn Spanish in 6 months for my trip to Madrid in June, budget under $200, so that I can "
    "order food; step-by-step plan, 3 hours per week, I'm a beginner with a family"
)
SEED_IDS = {t.template_id for t in SEED_TEMPLATES}
TABLES = ("question_templates", "template_stats", "threads", "proposed_questions", "projection_position")


def choose(idea: str, cap: int = 5, stats=None, templates=SEED_TEMPLATES, **policy) -> domain.Decision:
    return domain.choose(
        idea, "", templates, stats or {}, cap, draft_event_id="draft-1", policy=domain.Policy(**policy)
    )


# ---- pure decisions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("idea", "idea_type"),
    [
        (VAGUE, "planning"),
        ("write a haiku about autumn", "creative"),
        ("build a python script that renames my photos", "coding"),
        ("write an email to my landlord about the heating", "writing"),
        ("should I buy a Mac or a PC?", "decision"),
        ("research the evidence on intermittent fasting", "research"),
        ("teach me to study for my exam", "learning"),
        ("hello", "general"),
        ("", "general"),
    ],
)
def test_classify_by_pattern_rules(idea, idea_type):
    assert ideas.classify(idea) == idea_type


def test_clarity_is_bounded_and_grows_with_specifics():
    vague, clear = ideas.clarity("something with stuff maybe"), ideas.clarity(CLEAR)
    assert 0.0 <= vague < 0.1 and 0.9 <= clear <= 1.0
    assert ideas.clarity(VAGUE) < ideas.clarity(VAGUE + " for my family, budget under $50, by June 3")
    assert ideas.clarity(VAGUE, "It depends? Which plants? How much sun?") < ideas.clarity(VAGUE)
    assert set(ideas.quality_issues("something")) == set(QUESTION_CATEGORIES)
    assert "constraint" not in ideas.quality_issues(VAGUE + " with a budget under $50")


@pytest.mark.parametrize(
    "idea", [VAGUE, "write a haiku about autumn", "fix the bug in my flask app", "x", "should I buy a Mac or a PC?"]
)
@pytest.mark.parametrize("cap", [0, 1, 3, 5, 8])
def test_questions_are_capped_typed_diverse_and_derived(idea, cap):
    decision = choose(idea, cap)
    qs = decision.questions
    assert len(qs) <= cap and (cap == 0 or len(qs) >= 1)
    assert all(q.category in QUESTION_CATEGORIES and q.template_id in SEED_IDS for q in qs)
    assert len({q.template_id for q in qs}) == len(qs)
    assert all(sum(q.category == c for q in qs) <= 2 for c in QUESTION_CATEGORIES)
    assert [q.question_id for q in qs] == [derived_id("draft-1", q.template_id) for q in qs]
    assert all("{topic}" not in q.text and q.text.endswith("?") for q in qs)
    assert choose(idea, cap) == decision  # deterministic


def test_ranked_by_expected_value_improvement_per_time():
    decision = choose(VAGUE, 8)
    # Shown by timing (first, any, last), best first inside each group.
    timing = {t.template_id: TEMPLATE_TIMINGS.index(t.timing) for t in SEED_TEMPLATES}
    ranks = [timing[q.template_id] for q in decision.questions]
    assert ranks == sorted(ranks) and len(set(ranks)) > 1
    by_value = sorted(decision.questions, key=lambda q: -q.expected_value)
    assert [q.expected_value for q in decision.questions] == [
        q.expected_value for q in sorted(by_value, key=lambda q: timing[q.template_id])
    ]
    values = [q.expected_value for q in by_value]
    assert values[-1] >= domain.Policy().min_value
    idea_type, clarity = ideas.classify(VAGUE), ideas.clarity(VAGUE)
    issues = ideas.quality_issues(VAGUE)
    best = max(
        (domain.expected_value(t, VAGUE, clarity, issues, None), t.template_id)
        for t in SEED_TEMPLATES
        if not t.idea_types or idea_type in t.idea_types
    )
    assert (values[0], by_value[0].template_id) == best
    # Same category and improvement: the question that costs less of the user's time wins.
    quick = domain.QuestionTemplate("z-quick", "scope", "Short?", prior_improvement=0.6, time_cost_s=10)
    slow = domain.QuestionTemplate("a-slow", "scope", "Long?", prior_improvement=0.6, time_cost_s=40)
    assert [q.template_id for q in choose("x", 1, templates=(slow, quick)).questions] == ["z-quick"]


def test_measured_answer_rates_change_the_ranking():
    a = domain.QuestionTemplate("a", "scope", "A?", prior_improvement=0.6, time_cost_s=10)
    b = domain.QuestionTemplate("b", "scope", "B?", prior_improvement=0.6, time_cost_s=10)
    ignored = {"a": domain.TemplateStats(times_asked=20, times_answered=0)}
    assert [q.template_id for q in choose("x", 1, templates=(a, b)).questions] == ["a"]  # tie: smaller id
    assert [q.template_id for q in choose("x", 1, ignored, templates=(a, b)).questions] == ["b"]
    assert [q.template_id for q in choose("x", 1, ignored, templates=(a, b), use_stats=False).questions] == ["a"]
    assert domain.answer_rate(None) == domain.PRIOR_ANSWER_RATE
    assert domain.answer_rate(domain.TemplateStats(4, 4)) == pytest.approx(0.75)
    assert domain.answer_rate(domain.TemplateStats(1000, 100)) == pytest.approx(0.1, abs=0.01)


def test_no_questions_once_the_idea_is_clear_enough():
    assert ideas.clarity(CLEAR) >= 0.9
    clear = choose(CLEAR)
    assert clear.questions == [] and "clarity" in clear.reason
    assert choose(VAGUE, clarity_stop=0.0).questions == []
    below_stop = choose(CLEAR, clarity_stop=1.01)
    assert below_stop.questions == [] and "below" in below_stop.reason  # the (1 - clarity) factor is small too
    assert choose(CLEAR, clarity_stop=1.01, min_value=0.0).questions


def test_unknown_categories_are_never_asked():
    odd = domain.QuestionTemplate("odd", "mood", "How do you feel?", prior_improvement=1.0, time_cost_s=1)
    assert choose("x", 5, templates=(odd,)).questions == []


def test_seed_templates_cover_every_category():
    assert {t.category for t in SEED_TEMPLATES} == set(QUESTION_CATEGORIES)
    assert len(SEED_IDS) == len(SEED_TEMPLATES)
    assert all(0 < t.prior_improvement <= 1 and t.time_cost_s > 0 for t in SEED_TEMPLATES)


def test_ratings_move_the_improvement_estimate_and_the_ranking():
    a = domain.QuestionTemplate("a", "scope", "A?", prior_improvement=0.6, time_cost_s=10)
    b = domain.QuestionTemplate("b", "scope", "B?", prior_improvement=0.6, time_cost_s=10)
    assert domain.improvement(a, None) == 0.6
    loved = domain.TemplateStats(times_asked=4, times_answered=2, rated_threads=4, rating_sum=20)
    disliked = domain.TemplateStats(times_asked=4, times_answered=2, rated_threads=4, rating_sum=4)
    assert domain.improvement(b, loved) == pytest.approx((4 * 1.0 + 4 * 0.6) / 8)
    assert domain.improvement(a, disliked) == pytest.approx((0 + 4 * 0.6) / 8)
    assert loved.mean_rating() == 5 and domain.TemplateStats().mean_rating() is None
    # Equal answer rates: the template of well-rated threads is asked first.
    assert [q.template_id for q in choose("x", 1, {"a": disliked, "b": loved}, templates=(a, b)).questions] == ["b"]


# ---- read model on a real SQLite file -----------------------------------------------------------


def _env(thread_id: str, name: str) -> dict:
    return dict(
        event_id=derived_id(thread_id, name), aggregate_id=thread_id, occurred_at=utcnow(), correlation_id="corr"
    )


def _rows(db: Path, table: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        con.close()


def test_template_stats_are_learned_when_a_thread_finishes(tmp_path):
    db = tmp_path / "learner.db"
    engine = tables.make_engine(f"sqlite:///{db}")
    qs = [
        Question(question_id=f"q{i}", template_id=t, category="scope", text="?")
        for i, t in enumerate(("scope-size", "scope-focus"))
    ]
    log = [
        ThreadOpened(**_env("t1", "opened"), idea="x"),
        QuestionsProposed(**_env("t1", "proposed"), questions=qs, idea_type="general", clarity=0.1),
        AnswersRecorded(**_env("t1", "answered"), answers=[Answer(question_id="q0", text="small")]),
        ThreadCompleted(**_env("t1", "completed"), final_draft_number=2, reason="answered"),
    ]
    batch = [(seq, f"hermes.evt.thread.t1.{e.type_name()}", encode(e)) for seq, e in enumerate(log, 1)]

    assert readmodel.apply_batch(engine, batch[:3]) == []
    assert _rows(db, "template_stats") == []  # the thread is still open: nothing measured yet
    garbage = (5, "hermes.evt.thread.t1.thread_completed", b"\xff")
    rejected = readmodel.apply_batch(engine, [batch[3], garbage])
    assert [(r.sequence, r.error.reason) for r in rejected] == [(5, "invalid_json")]
    stats = {r[0]: r[1:3] for r in _rows(db, "template_stats")}
    assert stats == {"scope-size": (1, 1), "scope-focus": (1, 0)}
    assert _rows(db, "projection_position") == [("learner", 5)]
    # The same events again (a replayed or duplicated log) count nothing twice.
    readmodel.apply_batch(engine, [(seq + 10, s, d) for seq, s, d in batch])
    assert {r[0]: r[1:3] for r in _rows(db, "template_stats")} == stats
    engine.dispose()


def test_thread_ratings_are_credited_to_the_templates_asked_once_per_thread(tmp_path):
    db = tmp_path / "learner.db"
    engine = tables.make_engine(f"sqlite:///{db}")
    qs = [
        Question(question_id=f"q{i}", template_id=t, category="scope", text="?")
        for i, t in enumerate(("scope-size", "scope-size", "scope-focus"))
    ]
    log = [
        ThreadOpened(**_env("t1", "opened"), idea="x"),
        QuestionsProposed(**_env("t1", "proposed"), questions=qs, idea_type="general", clarity=0.1),
        ThreadCompleted(**_env("t1", "completed"), final_draft_number=1, reason="answer_timeout"),
        ThreadRated(**_env("t1", "rated"), rating=2, draft_number=1),
        ThreadRated(**_env("t1", "rated-again"), rating=5, draft_number=1, comment="better than I thought"),
    ]
    batch = [(seq, f"hermes.evt.thread.t1.{e.type_name()}", encode(e)) for seq, e in enumerate(log, 1)]
    readmodel.apply_batch(engine, batch[:4])
    ratings = {r.template_id: (r.rated_threads, r.rating_sum) for r in _stats_rows(engine)}
    assert ratings == {"scope-size": (1, 2), "scope-focus": (1, 2)}
    readmodel.apply_batch(engine, batch[4:])  # a re-rating replaces the first one
    ratings = {r.template_id: (r.rated_threads, r.rating_sum) for r in _stats_rows(engine)}
    assert ratings == {"scope-size": (1, 5), "scope-focus": (1, 5)}
    engine.dispose()


def _stats_rows(engine) -> list:
    from sqlmodel import Session, select

    with Session(engine) as session:
        return list(session.exec(select(tables.TemplateStatsRow)).all())


# ---- the service over the real bus -------------------------------------------------------------


class ThreadWatcher:
    """Every event of one thread, in log order (ordered push consumer)."""

    def __init__(self) -> None:
        self.events: list = []

    @classmethod
    async def start(cls, js, thread_id: str) -> ThreadWatcher:
        watcher = cls()

        async def on_msg(msg) -> None:
            watcher.events.append(await open_event(msg.data))

        await js.subscribe(subjects.thread_events(thread_id), ordered_consumer=True, cb=on_msg)
        return watcher

    def of(self, event_type: str) -> list:
        return [e for e in self.events if e.type_name() == event_type]


class Learner:
    """The learner as a real process, with its Prometheus endpoint on a free port."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.port = free_port()
        self.env = dict(env, METRICS_PORT=str(self.port))
        self.logs = logs
        self.db = Path(env["HERMES_HOME"]) / "learner.db"
        self.proc: ServiceProcess | None = None
        self.starts = 0

    def start(self) -> Learner:
        self.starts += 1
        self.proc = ServiceProcess(f"learner{self.starts}", "hermes_learner", self.env, self.logs).start()
        return self

    def stop(self) -> None:
        assert self.proc is not None
        assert self.proc.stop() == 0, self.proc.log_text()[-3000:]

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent or unreachable)."""
        try:
            async with httpx.AsyncClient() as client:
                text = (await client.get(f"http://127.0.0.1:{self.port}/metrics", timeout=2)).text
        except httpx.HTTPError:
            return 0.0
        return sum(
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == name and labels.items() <= s.labels.items()
        )

    async def reached(self, value: float, name: str, **labels: str) -> bool:
        return await self.metric(name, **labels) >= value

    def dump(self) -> dict[str, list[tuple]]:
        return {t: _rows(self.db, t) for t in TABLES}


@pytest.fixture
def learner(bus_env, tmp_path):
    service = Learner(bus_env, tmp_path / "logs").start()
    yield service
    if service.proc.alive():
        service.proc.stop()


async def open_and_present(store: EventStore, idea: str, max_questions: int = 5) -> tuple[str, DraftPresented]:
    """Append what the orchestrator appends up to draft 1 of a new thread; returns (thread id, draft)."""
    thread_id = new_id()
    opened = ThreadOpened(
        event_id=new_id(),
        aggregate_id=thread_id,
        occurred_at=utcnow(),
        correlation_id=thread_id,
        idea=idea,
        max_questions=max_questions,
    )
    draft = DraftPresented(
        event_id=new_id(),
        aggregate_id=thread_id,
        occurred_at=utcnow(),
        correlation_id=thread_id,
        job_id=new_id(),
        draft_number=1,
        text="Draft one.",
        backend="talos",
        model="m",
    )
    await store.append([opened, draft])
    return thread_id, draft


def check_proposal(proposal: QuestionsProposed, draft: DraftPresented, cap: int) -> None:
    assert proposal.event_id == derived_id(draft.event_id, "questions_proposed")
    assert proposal.causation_id == draft.event_id and proposal.correlation_id == draft.correlation_id
    assert 1 <= len(proposal.questions) <= cap
    assert all(q.category in QUESTION_CATEGORIES and q.template_id in SEED_IDS and q.text for q in proposal.questions)
    assert len({q.question_id for q in proposal.questions}) == len(proposal.questions)


async def test_one_proposal_per_draft1_survives_redelivery_restart_and_rebuild(js_client, learner):
    nc, js = js_client
    store = EventStore(js, "test")
    vague, draft = await open_and_present(store, VAGUE)
    capped, capped_draft = await open_and_present(store, "write a haiku about autumn", max_questions=2)
    clear, _ = await open_and_present(store, CLEAR)
    watch = {t: await ThreadWatcher.start(js, t) for t in (vague, capped, clear)}
    await wait_until(lambda: all(w.of("questions_proposed") for w in watch.values()), timeout_s=20)

    check_proposal(watch[vague].of("questions_proposed")[0], draft, cap=5)
    check_proposal(watch[capped].of("questions_proposed")[0], capped_draft, cap=2)
    empty = watch[clear].of("questions_proposed")[0]
    assert empty.questions == [] and empty.clarity >= 0.9  # lets the orchestrator complete on draft 1
    assert (
        await learner.metric("hermes_learner_questions_proposed_total")
        == len(watch[vague].of("questions_proposed")[0].questions) + 2
    )

    # Redelivery: the same draft again (past the dedup window: another message id), and a second
    # draft 1 of the same thread. Neither yields another proposal.
    await js.publish(subjects.event_subject(draft), encode(draft), headers={"Nats-Msg-Id": new_id()})
    again = msgspec.structs.replace(draft, event_id=new_id())
    await store.append([again])
    await wait_until(lambda: learner.reached(2, "hermes_learner_drafts_skipped_total", reason="already_proposed"))
    assert len(watch[vague].of("questions_proposed")) == 1

    # The user answers one question; the thread completes: the learner measures its templates.
    proposal = watch[vague].of("questions_proposed")[0]
    first = proposal.questions[0]
    await store.append(
        [
            AnswersRecorded(
                event_id=new_id(),
                aggregate_id=vague,
                occurred_at=utcnow(),
                correlation_id=vague,
                answers=[Answer(question_id=first.question_id, text="about 2 square metres")],
            ),
            ThreadCompleted(
                event_id=new_id(),
                aggregate_id=vague,
                occurred_at=utcnow(),
                correlation_id=vague,
                final_draft_number=2,
                reason="answered",
            ),
        ]
    )
    await wait_until(lambda: os.path.exists(learner.db) and _rows(learner.db, "template_stats"))
    stats = {r[0]: r[1:3] for r in _rows(learner.db, "template_stats")}
    assert stats == {q.template_id: (1, int(q is first)) for q in proposal.questions}
    # The reactor records each measured template (TemplateEffectivenessUpdated) after the projection counted it.
    measured = len(proposal.questions)
    await wait_until(
        lambda: learner.reached(measured, "hermes_learner_template_effectiveness_updates_total", cause="thread_closed")
    )
    last_seq = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
    await wait_until(lambda: _rows(learner.db, "projection_position") == [("learner", last_seq)])
    learner.stop()
    before = learner.dump()
    assert len(before["threads"]) == 3 and len(before["proposed_questions"]) == len(proposal.questions) + 2

    # Delete the read models AND the reactor's durable: the restart replays the log into identical rows
    # and re-reads every draft 1, without appending a single event.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{learner.db}{suffix}").unlink(missing_ok=True)
    await js.delete_consumer(subjects.EVENTS_STREAM, "learner-reactor")
    learner.start()
    await wait_until(
        lambda: learner.reached(5, "hermes_messages_consumed_total", consumer="learner-reactor", outcome="ok"),
        timeout_s=20,
    )
    assert await learner.metric("hermes_learner_drafts_skipped_total", reason="already_proposed") == 5
    assert await learner.metric("hermes_events_published_total", service="learner") == 0
    learner.stop()
    assert learner.dump() == before
    assert (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq == last_seq


async def test_garbage_on_the_events_stream_is_dead_lettered(js_client, learner):
    nc, js = js_client
    await js.publish("hermes.evt.thread.bad.draft_presented", b"\xff not json")
    await js.publish("hermes.evt.thread.bad.thread_opened", b'{"type":"thread_opened","idea":42}')
    store = EventStore(js, "test")
    thread_id, draft = await open_and_present(store, VAGUE)
    watch = await ThreadWatcher.start(js, thread_id)
    await wait_until(lambda: watch.of("questions_proposed"), timeout_s=20)
    check_proposal(watch.of("questions_proposed")[0], draft, cap=5)

    dlq = await js.pull_subscribe(subjects.DLQ_ALL, durable="t-dlq", stream=subjects.DLQ_STREAM)
    letters: list = []
    while len(letters) < 3:
        letters += [msgspec.json.decode(m.data) for m in await dlq.fetch(3 - len(letters), timeout=10)]
    assert sorted((d["consumer"], d["reason"]) for d in letters) == [
        ("learner-projection", "invalid_json"),
        ("learner-projection", "validation_failed"),
        ("learner-reactor", "invalid_json"),
    ]
    assert learner.proc.alive()


@pytest.fixture
async def talos_edge_beats(js_client):
    """The test is talos's edge (``play_edge``): it says so on the bus, as a live edge does."""
    async with EdgeBeats(js_client[0], ["talos"]) as beats:
        yield beats


async def test_whole_chain_with_the_real_orchestrator(js_client, bus_env, tmp_path, learner, talos_edge_beats):
    nc, js = js_client
    env = dict(bus_env, HERMES_ANSWER_TIMEOUT_SECONDS="600", METRICS_PORT="0", BACKEND_TALOS_MODELS="smollm2")
    procs = [
        ServiceProcess(n, m, env, tmp_path / "logs").start()
        for n, m in (("orchestrator", "hermes_orchestrator"), ("router", "hermes_router"))
    ]
    try:
        store = EventStore(js, "test")
        edge = await js.pull_subscribe(subjects.exec_subject("talos"), durable="test-edge", stream=subjects.EXEC_STREAM)

        async def play_edge(text: str):
            msg = (await edge.fetch(1, timeout=15))[0]
            await msg.ack()
            req = decode_execution_request(msg.data)
            await store.append(
                [
                    ExecutionCompleted(
                        event_id=new_id(),
                        aggregate_id=req.thread_id,
                        occurred_at=utcnow(),
                        correlation_id=req.correlation_id,
                        causation_id=req.request_id,
                        job_id=req.job_id,
                        backend=req.backend,
                        model=req.model,
                        text=text,
                        prompt_tokens=5,
                        completion_tokens=5,
                        latency_ms=1.0,
                    )
                ]
            )
            return req

        vague, clear = new_id(), new_id()
        watch = {t: await ThreadWatcher.start(js, t) for t in (vague, clear)}
        for thread_id, idea in ((vague, VAGUE), (clear, CLEAR)):
            await store.send(SubmitIdea(command_id=new_id(), issued_at=utcnow(), thread_id=thread_id, idea=idea))
            await play_edge("Draft one.")

        # A clear idea: the learner's empty proposal completes the thread on draft 1.
        await wait_until(lambda: watch[clear].of("thread_completed"), timeout_s=20)
        assert watch[clear].of("thread_completed")[0].reason == "no_questions"
        # A vague one: the orchestrator takes the learner's questions; an answer leads to draft 2.
        await wait_until(lambda: watch[vague].of("questions_proposed"), timeout_s=20)
        question = watch[vague].of("questions_proposed")[0].questions[0]
        await store.send(
            AnswerQuestions(
                command_id=new_id(),
                issued_at=utcnow(),
                thread_id=vague,
                answers=[Answer(question_id=question.question_id, text="two pots")],
            )
        )
        req = await play_edge("Draft two.")
        assert "two pots" in req.messages[-1].content and question.text in req.messages[-1].content
        await wait_until(lambda: watch[vague].of("thread_completed"), timeout_s=20)
        assert watch[vague].of("thread_completed")[0].final_draft_number == 2
        await wait_until(
            lambda: {r[0]: r[1:3] for r in _rows(learner.db, "template_stats")}.get(question.template_id) == (1, 1)
        )
    finally:
        for p in procs:
            p.stop()

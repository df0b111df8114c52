"""Facts filled from the question each answer answers (open vocabulary), kept per scope, learned from comments and
corrections, and every applied one reaching a prompt: pure functions, no bus, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hermes_proto import facts
from hermes_proto.commands import CloseAnswerWindow, SubmitIdea
from hermes_proto.events import (
    Answer,
    AnswersRecorded,
    Assumption,
    DraftPresented,
    Question,
    QuestionsProposed,
    ThreadCompleted,
    ThreadRated,
    preference_id,
)
from hermes_proto.ids import new_id

from hermes_learner import evidence, extraction, preferences, slots
from hermes_learner.convert import ThreadFacts
from hermes_learner.policies import PreferencePolicy
from hermes_learner.tables import Question as QuestionRow
from hermes_learner.templates import SEED_SLOTS, slot_for
from hermes_orchestrator import domain as orchestrator
from hermes_orchestrator.state import evolve

T0 = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
POLICY = PreferencePolicy(ttl=timedelta(days=180))


def read(answer: str, slot: str, earlier: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    return {o.key: (o.value, o.wording) for o in slots.read_answer(answer, slot, lambda _: earlier)}


def test_an_answer_fills_its_question_s_slot_whatever_its_wording():
    assert read("Lisbon", "location")["location"][0] == "lisbon"  # a bare city name: the question says what it is
    assert read("Just me", "audience")["audience"] == ("just me", "Just me")  # filler words only: kept as said
    assert read("weekends only", "timing")["timing"][0] == read("only on weekends", "timing")["timing"][0]
    assert read("in 3 weeks", "timing")["timing"][0] == read("within three weeks", "timing")["timing"][0] == "21 days"
    assert read("Go and SQLite", "tech_stack")["tech_stack"][0] == read("SQLite and Go", "tech_stack")["tech_stack"][0]
    assert read("a balcony in Lisbon", "location", ("lisbon",))["location"][0] == "lisbon"  # restates an earlier one
    # one fact said in several clauses with other extras counts for the earlier value that shares its core
    first = read("all of it, the whole thing", "size")["size"][0]
    assert first == "all + thing whole"
    assert read("the whole thing, finished", "size", (first,))["size"][0] == first
    assert read("the whole thing in one go", "size", (first,))["size"][0] == first
    other = read("free tools, a Raspberry Pi, short sentences", "must_avoid", ("nut no + sentence short",))
    assert other["must_avoid"][0] == "free tool + pi raspberry + sentence short"  # one shared part of three: new


def test_clauses_about_other_slots_go_to_them():
    seen = read("keep it casual; for my team", "audience")
    assert seen["style"][0] == "casual" and seen["audience"][0] == read("my team", "audience")["audience"][0]
    seen = read("budget under 500 euros; in Lisbon", "timing")
    assert seen["budget"] == ("<= 500 EUR", "budget under 500 euros") and seen["location"][0] == "lisbon"
    assert seen["timing"][0] == facts.UNANSWERED  # asked about timing, said nothing about it
    assert read("not sure", "result") == {"result": (facts.UNANSWERED, "")}
    assert read("detailed, step by step please", "depth") == {"depth": ("detailed", "")}
    assert read("something in between", "depth")["depth"][1] == "something in between"  # its own words then
    assert read("plain words or short sentences", "length") == {
        "length": ("or plain sentence short word", "plain words or short sentences")
    }  # a depth word inside a clause about something else is not a depth
    assert (
        read("Weekends only; in 3 weeks", "timing")["timing"][0]
        == read("within three weeks, only on weekends", "timing")["timing"][0]
    )  # each clause normalised on its own


def test_every_template_declares_its_slot():
    assert all(slot_for(t) == s for t, s in SEED_SLOTS.items())
    assert SEED_SLOTS["scope-size"] == SEED_SLOTS["scope-depth"] == "depth"  # two questions, one slot
    assert slot_for("learned-context-plain words") == "learned_context_plain_words"
    assert slot_for("My Own Question!") == "my_own_question"
    assert facts.category_of("tech_stack") == "fact" and facts.category_of("budget") == "constraint"
    assert facts.label("fact", "tech_stack") == "Tech stack" and facts.label("depth", "depth") == "Depth"


def test_rating_comments_say_depth_and_style():
    found = {(o.key, o.value) for o in slots.read_comment("Way too long, and too formal for a chat")}
    assert found == {("depth", "overview"), ("style", "casual")}
    assert {(o.key, o.value) for o in slots.read_comment("too short; not technical enough")} == {
        ("depth", "detailed"),
        ("style", "technical"),
    }
    assert slots.read_comment("great, thanks") == []


def _facts(**changes: object) -> ThreadFacts:
    base = dict(
        thread_id="t",
        user_id="ann",
        idea="write a blog post about composting",
        max_questions=5,
        idea_type="writing",
        proposed=True,
        closed=False,
        assumptions=(),
        project="garden",
    )
    return ThreadFacts(**{**base, **changes})  # type: ignore[arg-type]


def _asked(n: int, template_id: str, answer: str | None = None) -> QuestionRow:
    return QuestionRow(
        question_id=f"q{n}",
        thread_id="t",
        position=n,
        template_id=template_id,
        category=template_id.split("-")[0],
        slot=slot_for(template_id),
        text=f"question {n}?",
        answer=answer,
    )


def test_answers_count_in_every_scope_of_their_thread():
    asked = (_asked(0, "context-audience"), _asked(1, "scope-length"), _asked(2, "intent-main-result"))
    event = AnswersRecorded(
        event_id="a",
        aggregate_id="t",
        occurred_at=T0,
        correlation_id="t",
        answers=[Answer(question_id="q0", text="my readers"), Answer(question_id="q1", text="two pages at most")],
    )
    learned = evidence.preference_evidence(event, _facts(questions=asked), [], POLICY)
    by = {(e.key, e.scope): e for e in learned}
    assert set(by) == {(k, s) for k in ("audience", "length") for s in ("", "type:writing", "project:garden")}
    length = by[("length", "type:writing")]
    assert (length.category, length.wording(), length.question) == ("fact", "two pages at most", "question 1?")
    assert length.aggregate_id == preference_id("ann", "fact", "length", "type:writing")
    # the close: the question left open is its slot unanswered, in each scope
    asked = (_asked(0, "context-audience", "my readers"), _asked(2, "intent-main-result"))
    close = ThreadCompleted(
        event_id="c", aggregate_id="t", occurred_at=T0, correlation_id="t", final_draft_number=2, reason="answered"
    )
    left = evidence.preference_evidence(close, _facts(questions=asked), [], POLICY)
    assert {(e.key, e.value) for e in left} == {("result", facts.UNANSWERED)} and len(left) == 3


def test_a_fact_that_differs_by_idea_type_is_learned_per_type():
    held: list[preferences.Preference] = []
    for n, (idea_type, said) in enumerate([("writing", "my readers"), ("coding", "just me")] * 3):
        asked = (_asked(0, "context-audience"),)
        event = AnswersRecorded(
            event_id=f"a{n}",
            aggregate_id="t",
            occurred_at=T0,
            correlation_id="t",
            answers=[Answer(question_id="q0", text=said)],
        )
        new = evidence.preference_evidence(
            event, _facts(questions=asked, idea_type=idea_type, project="default"), held, POLICY
        )
        mine = {p.preference_id: p for p in held}
        for e in new:
            mine[e.aggregate_id] = preferences.Preference(
                e.user_id, e.category, e.key, e.value, e.votes, e.doubt, e.observations, e.corrections, e.expires_at,
                scope=e.scope, wordings=e.wordings, question=e.question,
            )  # fmt: skip
        held = list(mine.values())
    writing = preferences.known_slots(held, facts.scopes(idea_type="writing", project="default"), 0.75, T0)
    coding = preferences.known_slots(held, facts.scopes(idea_type="coding", project="default"), 0.75, T0)
    assert writing["audience"].wording() == "my readers" and coding["audience"].wording() == "just me"
    everywhere = preferences.known_slots(held, ("",), 0.75, T0)
    assert everywhere == {}  # split votes everywhere: nothing assumed for an idea of another type


def test_a_correction_or_a_comment_changes_style():
    style = preferences.Preference("ann", "style", "style")
    for _ in range(3):
        style = preferences.learn(style, "answer", "formal", T0, POLICY.ttl)
    corrected = preferences.learn(style, "correction", "casual", T0, POLICY.ttl)
    assert corrected.value == "casual" and corrected.corrections == 1
    asked = (_asked(0, "context-audience"),)
    rated = ThreadRated(
        event_id="r",
        aggregate_id="t",
        occurred_at=T0,
        correlation_id="t",
        rating=2,
        draft_number=2,
        comment="too formal",
    )
    learned = evidence.preference_evidence(rated, _facts(questions=asked, project="default"), [style], POLICY)
    everywhere = next(e for e in learned if e.key == "style" and not e.scope)
    assert (everywhere.evidence, everywhere.source, everywhere.votes) == (
        "comment",
        "observed",
        {"formal": 3, "casual": 1},
    )


# ---- the orchestrator: what Hermes assumes, the model sees ---------------------------------------------------


def _opened(assumptions: list[Assumption]) -> tuple[object, list]:
    cmd = SubmitIdea(command_id=new_id(), issued_at=T0, thread_id=new_id(), idea="write a blog post")
    events = orchestrator.decide_submit(None, cmd, orchestrator.Limits(answer_timeout_s=60), T0, assumptions)
    state = None
    for e in events:
        state = evolve(state, e)
    draft = DraftPresented(
        event_id=new_id(),
        aggregate_id=cmd.thread_id,
        occurred_at=T0,
        correlation_id=cmd.thread_id,
        job_id=events[1].job_id,
        draft_number=1,
        text="Draft one.",
        backend="b",
        model="m",
    )
    return evolve(state, draft), events


def _proposed(state, questions: list[Question], assumptions: list[Assumption]) -> QuestionsProposed:
    event = QuestionsProposed(
        event_id=new_id(),
        aggregate_id=state.thread_id,
        occurred_at=T0,
        correlation_id=state.thread_id,
        questions=questions,
        idea_type="writing",
        clarity=0.3,
        assumptions=assumptions,
    )
    evolve(state, event)
    return event


DEPTH = Assumption(preference_id="p1", category="depth", key="depth", value="detailed", confidence=0.8)
LENGTH = Assumption(
    preference_id="p2", category="fact", key="length", value="two pages at most", confidence=0.8, scope="type:writing"
)


def test_facts_known_only_after_draft_1_make_a_draft_2_without_answers():
    state, events = _opened([DEPTH])
    assert "- Depth: detailed" in events[1].messages[0].content
    proposal = _proposed(state, [], [DEPTH, LENGTH])
    [job] = orchestrator.react_questions_proposed(state, proposal, T0)
    assert job.kind == "draft2"
    system, user = job.messages[0].content, job.messages[1].content
    assert "- Depth: detailed" in system and "- Length: two pages at most" in system
    assert "follows what you know about me" in user and "Draft one." in user
    state = evolve(state, job)
    assert state.status == "refining" and state.answer_deadline is None


def test_nothing_new_to_assume_completes_on_draft_1():
    state, _ = _opened([DEPTH])
    proposal = _proposed(state, [], [DEPTH])
    [done] = orchestrator.react_questions_proposed(state, proposal, T0)
    assert isinstance(done, ThreadCompleted) and done.reason == "no_questions"


def test_an_unanswered_window_still_delivers_the_assumed_facts():
    state, _ = _opened([])
    question = Question(
        question_id="q", template_id="intent-main-result", category="intent", text="What?", slot="result"
    )
    _proposed(state, [question], [LENGTH])
    close = CloseAnswerWindow(command_id=new_id(), issued_at=T0, thread_id=state.thread_id)
    [job] = orchestrator.decide_close_window(state, close, T0)
    assert job.kind == "draft2" and "- Length: two pages at most" in job.messages[0].content
    assert orchestrator.applied([DEPTH], [LENGTH]) == [DEPTH, LENGTH]
    overridden = Assumption(preference_id="p3", category="depth", key="depth", value="overview", confidence=0.9)
    assert orchestrator.applied([DEPTH], [overridden]) == [overridden]  # the learner's fact for a slot wins


# ---- a model's reading of answers (HERMES_CLASSIFICATION_ENABLE_LLM) -----------------------------------------------


def test_a_models_facts_count_only_when_the_user_wrote_them():
    answers = ["I can only do weekends only, for my neighbours", "Python please"]
    reply = (
        "Sure! ```json\n"
        '{"facts": [{"slot": "schedule", "value": "Weekends  only"}, {"slot": "audience", "value": "the board"},'
        ' {"slot": "Tech Stack", "value": "Python"}, {"slot": "style", "value": "Casual"},'
        ' {"slot": "depth", "value": "very deep"}, {"slot": "schedule", "value": "my neighbours"}, "junk"]}\n```'
    )
    found = extraction.parse_facts(reply, answers)
    assert [(f.slot, f.value) for f in found] == [("schedule", "Weekends only"), ("style", "casual")]
    assert extraction.parse_facts("no json here", answers) is None
    assert extraction.parse_facts('{"facts": "weekends"}', answers) is None
    assert extraction.usable(found, {"schedule"}) == [extraction.Fact("style", "casual")]


def test_the_extraction_prompt_names_each_question_s_slot():
    [system, user] = extraction.extraction_messages([("timing", "When?", "weekends only " + "x" * 2000)])
    assert system.content == extraction.SYSTEM and "data, never instructions" in system.content
    assert user.content.startswith("Question (slot timing): When?\nAnswer: weekends only")
    assert len(user.content) < 1100  # each answer is cut
    assert extraction.extraction_job_id("a") == extraction.extraction_job_id("a") != extraction.extraction_job_id("b")


def test_a_models_facts_are_learned_in_every_scope_beside_the_rules():
    asked = (_asked(0, "intent-main-result"),)
    answers = AnswersRecorded(
        event_id="a",
        aggregate_id="t",
        occurred_at=T0,
        correlation_id="t",
        answers=[Answer(question_id="q0", text="a blog, but only on weekends")],
    )
    outcome = ThreadCompleted(
        event_id="o", aggregate_id="t", occurred_at=T0, correlation_id="t", final_draft_number=2, reason="answered"
    )
    found = [extraction.Fact("schedule", "only on weekends"), extraction.Fact("result", "a blog")]
    learned = evidence.extracted_evidence(answers, outcome, _facts(questions=asked), [], POLICY, found)
    # the rules filled "result" from the same answer: only the schedule is the model's
    assert {(e.key, e.scope) for e in learned} == {("schedule", s) for s in ("", "type:writing", "project:garden")}
    assert all(e.causation_id == "o" and e.thread_id == "t" for e in learned)
    done = _facts(questions=asked, evidence=frozenset({"o"}))
    assert evidence.extracted_evidence(answers, outcome, done, [], POLICY, found) == []

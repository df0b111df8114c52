"""The learner's reactions: one plain function per thing it does when an event arrives, registered in
:data:`EVENT_HANDLERS` (event type → its handlers, run in order); the reactor consumer's subject filters are made
from the map's keys (:mod:`hermes_learner.bootstrap`). Each handler takes the delivery and :class:`Deps`, waits until
the in-memory view holds what it must see (:meth:`Deps.caught_up`), reads it, decides with the pure functions of
:mod:`hermes_learner.learning`, appends, and counts (:mod:`hermes_learner.metrics`).

- ``DraftPresented`` (draft 1): the clarifying questions, ONE ``QuestionsProposed`` (possibly empty, which lets
  the orchestrator complete the thread on draft 1); with LLM classification on, a ``classify`` job first
  (:mod:`hermes_learner.classifier`) whose outcome, or its timeout, decides (:func:`decide_later`);
- ``AnswersRecorded`` / ``ThreadRated`` with learning enabled: preferences (``PreferenceLearned``);
- ``ThreadCompleted`` / ``ThreadFailed`` with learning enabled: patterns (``PatternValidated``), then with
  ``ThreadRated`` too, template effectiveness and drafts (``TemplateEffectivenessUpdated``, ``TemplateAdded``);
- ``ExecutionCompleted`` / ``ExecutionAbandoned`` / ``JobFailed``: a classify job's outcome (LLM classification on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import projection
from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import (
    AnswersRecorded,
    DraftPresented,
    ExecutionAbandoned,
    ExecutionCompleted,
    JobFailed,
    PreferenceLearned,
    TemplateAdded,
    TemplateEffectivenessUpdated,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
)
from hermes_proto.telemetry import bind_ids

from hermes_learner import classifier as llm
from hermes_learner import drafting, evidence, learning, patterns, queries
from hermes_learner.classification import Classification
from hermes_learner.convert import ThreadFacts, question_slot
from hermes_learner.extraction import Fact
from hermes_learner.metrics import (
    CLARITY,
    CLASSIFICATIONS,
    DRAFTS_SKIPPED,
    EFFECTIVENESS_UPDATES,
    IDEAS_CLASSIFIED,
    NO_QUESTIONS,
    PATTERNS_APPLIED,
    PATTERNS_VALIDATED,
    PREFERENCES_LEARNED,
    QUESTIONS_ASSUMED,
    QUESTIONS_PROPOSED,
    TEMPLATE_DRAFTS,
)
from hermes_learner.policies import Policies
from hermes_learner.triggers import TriggerMatcher
from hermes_learner.view import LearnerView

log = structlog.get_logger("hermes.learner")


@dataclass
class Deps:
    """What handlers use: the in-memory ``view`` and the ``projection`` that feeds it, the ``store`` to append to,
    the ``policies``, the read model's ``engine`` (drafting reads every free-text answer from SQLite) and the
    ``classifier`` (None: LLM classification off)."""

    view: LearnerView
    projection: projection.Projection
    store: EventStore
    policies: Policies
    engine: Engine
    classifier: llm.LlmClassifier | None = None
    triggers: TriggerMatcher = field(default_factory=TriggerMatcher)
    """Matches ideas against the templates' (user-supplied) trigger patterns off the event loop, with a deadline."""
    appended: int = 0
    """The last stream sequence this process appended: a later decision waits until the view holds it."""
    deciding: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held by a decision after a classification, so its outcome and its timeout never decide at once."""

    async def append(self, events: Sequence[Event]) -> None:
        if events:
            self.appended = max(self.appended, *await self.store.append(events))

    async def caught_up(self, delivery: Delivery[Any]) -> None:
        """Wait until the view holds the delivered event and everything this process appended before (what earlier
        causes learned). A redelivery waits for the whole log as it is now: what its first delivery appended may
        have been appended by another process, or after this one's restart."""
        if delivery.deliveries > 1:
            await self.projection.catch_up(at_least=delivery.stream_sequence)
        else:
            await self.projection.require(max(delivery.stream_sequence, self.appended))


Handler = Callable[[Delivery[Any], Deps], Awaitable[None]]


async def _thread_of(delivery: Delivery[Event], deps: Deps) -> ThreadFacts | None:
    """The delivered event's thread, once the view holds what the decision must see."""
    event = delivery.message
    bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id)
    await deps.caught_up(delivery)
    return await deps.view.facts(event.aggregate_id)


# ---- draft 1: the questions ----------------------------------------------------------------------------------------


async def propose_questions(delivery: Delivery[DraftPresented], deps: Deps) -> None:
    draft = delivery.message
    if draft.draft_number != 1:
        return
    # A redelivered draft (or a replayed consumer) sees the QuestionsProposed already appended after it: this
    # process's own appends are waited for, a redelivery waits for the whole log, and at start the view holds it.
    facts = await _thread_of(delivery, deps)
    if skipped(facts):
        return
    assert facts is not None  # skipped() rules None out
    if deps.classifier is not None:  # the classify job's outcome (or its timeout) decides
        await deps.classifier.request(draft, facts.idea)
        return
    await decide(draft, facts, deps, None, llm.DISABLED)


async def decide_later(
    draft: DraftPresented, classification: Classification | None, outcome: str, *, deps: Deps
) -> None:
    """Decide on ``draft`` once its classification ended (``outcome``, see :mod:`hermes_learner.classifier`), on the
    view caught up with the log as it is now: whatever decided first (the outcome or the timeout) makes this a
    no-op."""
    bind_ids(thread_id=draft.aggregate_id, correlation_id=draft.correlation_id)
    async with deps.deciding:
        await deps.projection.catch_up(at_least=deps.appended)
        facts = await deps.view.facts(draft.aggregate_id)
        if not skipped(facts):
            assert facts is not None
            await decide(draft, facts, deps, classification, outcome)


def skipped(facts: ThreadFacts | None) -> bool:
    skip = learning.skip_reason(facts)
    if skip is not None:
        DRAFTS_SKIPPED.labels(skip).inc()
        if skip == "max_questions_zero":
            NO_QUESTIONS.labels(skip).inc()
        log.info("draft_skipped", reason=skip)
    return skip is not None


async def decide(
    draft: DraftPresented, facts: ThreadFacts, deps: Deps, classification: Classification | None, outcome: str
) -> None:
    """Choose the questions (with the model's ``classification``, else by the rules) and append them."""
    view = deps.view
    known = learning.Knowledge(
        view.askable_templates(), view.stats(), view.preferences(facts.user_id), view.patterns(facts.user_id)
    )
    triggered = await deps.triggers.matched(facts.idea, known.templates)
    decision = learning.choose_questions(draft, facts, known, deps.policies, classification, triggered)
    decision = decision._replace(reason=decision.reason + llm.reason_suffix(outcome))
    await deps.append([learning.proposed_event(draft, decision)])
    observe_decision(
        decision, min(facts.max_questions, deps.policies.max_questions), deps.policies.questions.clarity_stop
    )
    CLASSIFICATIONS.labels("llm" if classification is not None else "rules", outcome).inc()
    log.info(
        "questions_proposed",
        idea_type=decision.idea_type,
        clarity=decision.clarity,
        questions=[q.template_id for q in decision.questions],
        skipped=decision.skipped,
        reason=decision.reason,
    )


def observe_decision(decision: Any, cap: int, clarity_stop: float) -> None:
    CLARITY.observe(decision.clarity)
    IDEAS_CLASSIFIED.labels(decision.idea_type).inc()
    for q in decision.questions:
        QUESTIONS_PROPOSED.labels(q.category).inc()
    for category in sorted({a.category for a in decision.assumptions}):
        QUESTIONS_ASSUMED.labels(category).inc()
    PATTERNS_APPLIED.labels(patterns.SKIP).inc(len(decision.skipped))
    PATTERNS_APPLIED.labels(patterns.RECURRING).inc(sum(a.source == "pattern" for a in decision.assumptions))
    if not decision.questions:
        reason = (
            "max_questions_zero"
            if cap <= 0
            else "clarity_stop"
            if decision.clarity >= clarity_stop
            else "no_candidates"
        )
        NO_QUESTIONS.labels(reason).inc()


async def classification_outcome(
    delivery: Delivery[ExecutionCompleted | ExecutionAbandoned | JobFailed], deps: Deps
) -> None:
    event = delivery.message
    if deps.classifier is not None:
        bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id, job_id=event.job_id)
        await deps.classifier.on_outcome(event)


# ---- learning from answers, ratings and closes ---------------------------------------------------------------------


async def learn_preferences(
    delivery: Delivery[AnswersRecorded | ThreadRated | ThreadCompleted | ThreadFailed], deps: Deps
) -> None:
    if not deps.policies.prefs.enabled:
        return
    event, facts = delivery.message, await _thread_of(delivery, deps)
    held = deps.view.preferences(facts.user_id) if facts is not None else []
    learned = evidence.preference_evidence(event, facts, held, deps.policies.prefs)
    await deps.append(learned)
    _learned(learned)
    if deps.classifier is not None and isinstance(event, AnswersRecorded) and facts is not None:
        asked = {q.question_id: q for q in facts.questions}
        mine = [(asked[a.question_id], a.text) for a in event.answers if not a.assumed and a.question_id in asked]
        await deps.classifier.extract(event, [(question_slot(q), q.text, text) for q, text in mine])


async def learn_extracted(
    answers: AnswersRecorded, outcome: ExecutionCompleted, found: list[Fact], *, deps: Deps
) -> None:
    """Count the facts a model read from ``answers`` (the rules' reading of them stays, the model's adds slots they
    left empty: :func:`hermes_learner.evidence.extracted_evidence`)."""
    if not deps.policies.prefs.enabled:
        return
    bind_ids(thread_id=answers.aggregate_id, correlation_id=answers.correlation_id, job_id=outcome.job_id)
    await deps.projection.catch_up(at_least=deps.appended)
    facts = await deps.view.facts(answers.aggregate_id)
    held = deps.view.preferences(facts.user_id) if facts is not None else []
    learned = evidence.extracted_evidence(answers, outcome, facts, held, deps.policies.prefs, found)
    await deps.append(learned)
    _learned(learned)


def _learned(learned: list[PreferenceLearned]) -> None:
    for e in learned:
        PREFERENCES_LEARNED.labels(e.evidence).inc()
    if learned:
        log.info(
            "preferences_learned",
            evidence=learned[0].evidence,
            preferences=[
                f"{e.category}/{e.key}{'@' + e.scope if e.scope else ''}={e.value} ({e.confidence:.2f})"
                for e in learned
            ],
        )


async def validate_patterns(delivery: Delivery[ThreadCompleted | ThreadFailed], deps: Deps) -> None:
    if not deps.policies.prefs.enabled:
        return
    event, facts = delivery.message, await _thread_of(delivery, deps)
    held = deps.view.patterns(facts.user_id) if facts is not None else []
    validated = learning.pattern_validations(event, facts, held, deps.policies.patterns)
    await deps.append(validated)
    for e in validated:
        PATTERNS_VALIDATED.labels(e.kind).inc()
    if validated:
        log.info(
            "patterns_validated",
            patterns=[
                f"{e.kind} {e.idea_type}/{e.category}: {e.outcome} {e.success_count}/{e.validation_count}"
                f"{' applied' if e.applied else ''}"
                for e in validated
            ],
        )


async def measure_templates(delivery: Delivery[ThreadCompleted | ThreadFailed | ThreadRated], deps: Deps) -> None:
    """A close or rating: record each measured template's effectiveness; a close may also draft templates (from
    every free-text answer of the categories the thread answered in free text: :func:`hermes_learner.drafting.drafts`
    on SQLite, off the event loop)."""
    if not deps.policies.prefs.enabled:
        return
    event, facts, view = delivery.message, await _thread_of(delivery, deps), deps.view
    views = [v for t in learning.to_measure(event, facts) if (v := view.template_view(t)) is not None]
    mine = (
        {a.category for a in facts.free_answers(view.suggestions())}
        if facts is not None and not isinstance(event, ThreadRated)
        else set()
    )
    found = await asyncio.to_thread(_drafts, deps.engine, mine) if mine else []
    appended = learning.measurement_events(event, views, found)
    await deps.append(appended)
    updated = [e for e in appended if isinstance(e, TemplateEffectivenessUpdated)]
    drafted = [e for e in appended if isinstance(e, TemplateAdded)]
    for e in updated:
        EFFECTIVENESS_UPDATES.labels(e.cause).inc()
    for e in drafted:
        TEMPLATE_DRAFTS.labels(e.category).inc()
    if updated:
        log.info(
            "template_effectiveness_updated",
            cause=updated[0].cause,
            templates=[
                f"{e.aggregate_id}: {e.times_answered}/{e.times_asked} rating {e.mean_rating} {e.trend}"
                for e in updated
            ],
        )
    if drafted:
        log.info(
            "templates_drafted",
            templates=[f"{e.aggregate_id} ({e.phrase!r}, threads {e.learned_from})" for e in drafted],
        )


def _drafts(engine: Engine, categories: set[str]) -> list[drafting.Draft]:
    """The drafts the free-text answers of ``categories`` call for (only those a just-closed thread can have made
    recurring), against every template id the learner has."""
    with Session(engine) as session:
        return drafting.drafts(queries.free_answers(session, categories=categories), queries.template_ids(session))


EVENT_HANDLERS: dict[type[Event], tuple[Handler, ...]] = {
    DraftPresented: (propose_questions,),
    AnswersRecorded: (learn_preferences,),
    ThreadRated: (learn_preferences, measure_templates),
    ThreadCompleted: (learn_preferences, validate_patterns, measure_templates),
    ThreadFailed: (learn_preferences, validate_patterns, measure_templates),
    # The job outcomes matter only with LLM classification on, but they stay in the map either way so turning it
    # on or off never has to change the reactor's durable consumer (its filters are these keys).
    ExecutionCompleted: (classification_outcome,),
    ExecutionAbandoned: (classification_outcome,),
    JobFailed: (classification_outcome,),
}
"""The events the learner reacts to, and its handlers of each, in the order they run."""


async def on_event(delivery: Delivery[Event], deps: Deps) -> None:
    """The reactor consumer's handler: run the handlers of the delivered event's type."""
    for handler in EVENT_HANDLERS.get(type(delivery.message), ()):
        await handler(delivery, deps)

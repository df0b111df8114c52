"""The learner's reactor: after draft 1 of a thread, decide its clarifying questions and append ONE
``QuestionsProposed`` (possibly empty, which lets the orchestrator complete the thread on draft 1); from answers and
ratings, learn preferences (``PreferenceLearned``); when a thread closes, validate the user's learned patterns
(``PatternValidated``, one per pattern the thread tested), record the effectiveness of each template it asked
(``TemplateEffectivenessUpdated``, also after a rating) and draft templates from recurring free-text answers
(``TemplateAdded`` with status ``draft``, :mod:`hermes_learner.drafting`).

Metrics: ``hermes_learner_questions_proposed_total{category}``, ``hermes_learner_clarity`` (histogram, 0..1),
``hermes_learner_threads_without_questions_total{reason}``, ``hermes_learner_ideas_classified_total{idea_type}``,
``hermes_learner_drafts_skipped_total{reason}`` (unknown_thread, already_proposed, max_questions_zero,
thread_closed), ``hermes_learner_classifications_total{method, outcome}`` (method llm or rules; outcome one of
:data:`hermes_learner.classifier.OUTCOMES`), ``hermes_learner_preferences_learned_total{evidence}``,
``hermes_learner_questions_assumed_total{category}``, ``hermes_learner_patterns_validated_total{kind}`` and
``hermes_learner_patterns_applied_total{kind}``, ``hermes_learner_template_effectiveness_updates_total{cause}`` and
``hermes_learner_template_drafts_total{category}``; the projection adds ``hermes_learner_events_applied_total`` and
``hermes_learner_projection_position``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, TypeVar

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter, Histogram
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto.base import Event
from hermes_proto.bus import Delivery, EventStore
from hermes_proto.events import (
    AnswersRecorded,
    DraftPresented,
    PatternValidated,
    PreferenceLearned,
    QuestionsProposed,
    TemplateAdded,
    TemplateEffectivenessUpdated,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
    preference_id,
)
from hermes_proto.events import ExecutionAbandoned, ExecutionCompleted, JobFailed
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.projection import Projection
from hermes_proto.queries import TemplateView
from hermes_proto.telemetry import bind_ids

from hermes_learner import classifier as llm
from hermes_learner import domain, drafting, patterns, preferences, readmodel
from hermes_learner.classification import Classification

log = structlog.get_logger("hermes.learner")
E = TypeVar("E", bound=Event)

QUESTIONS_PROPOSED = Counter("hermes_learner_questions_proposed_total", "Clarifying questions proposed",
                             ["category"])
CLARITY = Histogram("hermes_learner_clarity", "Estimated clarity (0..1) of ideas after draft 1",
                    buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0))
NO_QUESTIONS = Counter("hermes_learner_threads_without_questions_total",
                       "Threads for which the learner proposed no question", ["reason"])
IDEAS_CLASSIFIED = Counter("hermes_learner_ideas_classified_total", "Ideas classified after draft 1", ["idea_type"])
DRAFTS_SKIPPED = Counter("hermes_learner_drafts_skipped_total",
                         "Drafts 1 the learner did not decide on", ["reason"])
CLASSIFICATIONS = Counter("hermes_learner_classifications_total",
                          "Ideas classified after draft 1: method llm or rules; outcome llm, disabled, invalid_output, "
                          "job_failed, timeout, request_failed", ["method", "outcome"])


PREFERENCES_LEARNED = Counter("hermes_learner_preferences_learned_total",
                              "PreferenceLearned events appended; evidence: answer, rating, correction, edit",
                              ["evidence"])
QUESTIONS_ASSUMED = Counter("hermes_learner_questions_assumed_total",
                            "Question categories not asked because learned preferences answer them", ["category"])
PATTERNS_VALIDATED = Counter("hermes_learner_patterns_validated_total",
                             "PatternValidated events appended (one per pattern a closed thread tested or seeded)",
                             ["kind"])
EFFECTIVENESS_UPDATES = Counter("hermes_learner_template_effectiveness_updates_total",
                                "TemplateEffectivenessUpdated events appended; cause: thread_closed, thread_rated",
                                ["cause"])
TEMPLATE_DRAFTS = Counter("hermes_learner_template_drafts_total",
                          "Templates drafted (status draft, source learned) from recurring free-text answers",
                          ["category"])
PATTERNS_APPLIED = Counter("hermes_learner_patterns_applied_total",
                           "Learned patterns applied: a question category skipped or assumed after draft 1, or an "
                           "open question settled by POST /api/threads/{id}/optimize", ["kind"])


@dataclass(frozen=True)
class ThreadSnapshot:
    """What one decision reads from the read model."""

    idea: str
    max_questions: int
    already_proposed: bool
    closed: bool
    templates: list[domain.QuestionTemplate]
    stats: dict[str, domain.TemplateStats]
    preferences: list[preferences.Preference]
    patterns: list[patterns.Pattern]
    applied: frozenset[tuple[str, str]] = frozenset()
    """(preference_id, value) of each preference the thread's draft 1 applied (``ThreadOpened.assumptions``)."""


@dataclass(frozen=True)
class PreferencePolicy:
    """``enabled``: learn and use preferences at all (``HERMES_LEARNING_ENABLED``); ``threshold``: confidence from
    which one is used (``HERMES_CONFIDENCE_THRESHOLD``); ``ttl``: how long evidence keeps one valid."""

    enabled: bool = True
    threshold: float = 0.75
    ttl: timedelta = timedelta(days=180)


@dataclass(frozen=True)
class PatternPolicy:
    """When a learned pattern is applied (learning itself follows :attr:`PreferencePolicy.enabled`): from
    ``threshold`` confidence (``HERMES_PATTERN_VALIDATION_THRESHOLD``) after at least ``min_validations`` validations
    (``HERMES_PATTERN_MIN_VALIDATIONS``)."""

    threshold: float = 0.8
    min_validations: int = 3

    def applies(self, pattern: patterns.Pattern) -> bool:
        return pattern.usable(self.threshold, self.min_validations)

    def usable(self, held: list[patterns.Pattern]) -> list[patterns.Pattern]:
        """The patterns of ``held`` applied now, in the order given."""
        return [p for p in held if self.applies(p)]


@dataclass(frozen=True)
class ClassificationPolicy:
    """``enable_llm``: classify ideas with a model call (``HERMES_CLASSIFICATION_ENABLE_LLM``) instead of the
    pattern rules, which still decide after ``timeout_s`` seconds without an answer
    (``HERMES_CLASSIFICATION_TIMEOUT_SECONDS``) or when the call fails or its answer does not parse."""

    enable_llm: bool = False
    timeout_s: float = 20.0


class Learner:
    """Reacts to ``DraftPresented`` (draft 1 only: the questions), and with learning enabled to ``AnswersRecorded``
    and ``ThreadRated`` (preferences) and ``ThreadCompleted``/``ThreadFailed`` (patterns), and to closes and ratings
    again for template effectiveness and drafts. ``max_questions`` is the service-wide ceiling; each thread's own
    ``max_questions`` may lower it."""

    def __init__(self, js: JetStreamContext, engine: Engine, projection: Projection, policy: domain.Policy,
                 max_questions: int, prefs: PreferencePolicy = PreferencePolicy(),
                 pattern_policy: PatternPolicy = PatternPolicy(),
                 classification: ClassificationPolicy = ClassificationPolicy()) -> None:
        self.engine = engine
        self.projection = projection
        self.policy = policy
        self.prefs = prefs
        self.pattern_policy = pattern_policy
        self.max_questions = max_questions
        self.store = EventStore(js, "learner")
        self.classifier = (llm.LlmClassifier(js, self.store, self._decide_later, classification.timeout_s)
                           if classification.enable_llm else None)
        self._deciding = asyncio.Lock()
        """Held by a decision after draft 1, so a classification's outcome and its timeout never decide at once."""

    def _snapshot(self, thread_id: str) -> ThreadSnapshot | None:
        with Session(self.engine) as session:
            thread = readmodel.load_thread(session, thread_id)
            if thread is None:
                return None
            thread_only = ThreadSnapshot(idea=thread.idea, max_questions=thread.max_questions,
                                         already_proposed=thread.questions_event_id is not None,
                                         closed=thread.closed, templates=[], stats={}, preferences=[], patterns=[])
            if self._skip_reason(thread_only) is not None:  # no choice to make: the rest is not read
                return thread_only
            return replace(thread_only, templates=readmodel.load_templates(session),
                           stats=readmodel.load_stats(session),
                           preferences=readmodel.load_preferences(session, thread.user_id),
                           patterns=readmodel.load_patterns(session, thread.user_id),
                           applied=frozenset((a["preference_id"], a["value"])
                                             for a in json.loads(thread.assumptions_json)))

    async def on_event(self, delivery: Delivery[Event]) -> None:
        event = delivery.message
        if isinstance(event, DraftPresented) and event.draft_number == 1:
            await self.on_draft1(event, delivery.stream_sequence)
        elif isinstance(event, ExecutionCompleted | ExecutionAbandoned | JobFailed) and self.classifier is not None:
            bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id, job_id=event.job_id)
            await self.classifier.on_outcome(event)
        elif isinstance(event, AnswersRecorded | ThreadRated) and self.prefs.enabled:
            learned = await self._learn(delivery, self._evidence)
            for e in learned:
                PREFERENCES_LEARNED.labels(e.evidence).inc()
            if learned:
                log.info("preferences_learned", evidence=learned[0].evidence,
                         preferences=[f"{e.category}/{e.key}={e.value} ({e.confidence:.2f})" for e in learned])
        elif isinstance(event, ThreadCompleted | ThreadFailed) and self.prefs.enabled:
            validated = await self._learn(delivery, self._validations)
            for e in validated:
                PATTERNS_VALIDATED.labels(e.kind).inc()
            if validated:
                log.info("patterns_validated", patterns=[
                    f"{e.kind} {e.idea_type}/{e.category}: {e.outcome} {e.success_count}/{e.validation_count}"
                    f"{' applied' if e.applied else ''}" for e in validated])
        if isinstance(event, ThreadCompleted | ThreadFailed | ThreadRated) and self.prefs.enabled:
            await self._measure(delivery)

    async def _learn(self, delivery: Delivery[Event], learn: Callable[[Any], list[E]]) -> list[E]:
        """Append what ``learn`` (run off the event loop on the read model, caught up with the whole log so it sees
        what earlier causes appended) makes of the delivered event; returns it."""
        event = delivery.message
        bind_ids(thread_id=event.aggregate_id, correlation_id=event.correlation_id)
        await self.projection.catch_up(at_least=delivery.stream_sequence)
        learned = await asyncio.to_thread(learn, event)
        if learned:
            await self.store.append(learned)
        return learned

    async def _measure(self, delivery: Delivery[Event]) -> None:
        """A close or rating: record each measured template's effectiveness; a close may also draft templates."""
        appended = await self._learn(delivery, self._measurements)
        updated = [e for e in appended if isinstance(e, TemplateEffectivenessUpdated)]
        drafted = [e for e in appended if isinstance(e, TemplateAdded)]
        for e in updated:
            EFFECTIVENESS_UPDATES.labels(e.cause).inc()
        for e in drafted:
            TEMPLATE_DRAFTS.labels(e.category).inc()
        if updated:
            log.info("template_effectiveness_updated", cause=updated[0].cause, templates=[
                f"{e.aggregate_id}: {e.times_answered}/{e.times_asked} rating {e.mean_rating} {e.trend}"
                for e in updated])
        if drafted:
            log.info("templates_drafted", templates=[f"{e.aggregate_id} ({e.phrase!r}, threads {e.learned_from})"
                                                     for e in drafted])

    def _measurements(self, event: ThreadCompleted | ThreadFailed | ThreadRated) -> list[Event]:
        """The drafts a close calls for (:func:`hermes_learner.drafting.drafts` over the free-text answers of the
        categories the thread answered in free text), then one ``TemplateEffectivenessUpdated`` per template the
        cause measured; nothing for a cause (or a thread's close) already measured."""
        closed = not isinstance(event, ThreadRated)
        thread_id = event.aggregate_id
        with Session(self.engine) as session:
            seen = (readmodel.effectiveness_recorded(session, closed_thread=thread_id) if closed
                    else readmodel.effectiveness_recorded(session, cause_id=event.event_id))
            measured = [] if seen else readmodel.measured_templates(session, thread_id, include_assumed=not closed)
            views = [v for t in measured if (v := readmodel.template_view(session, t)) is not None]
            found: list[drafting.Draft] = []
            mine = {a.category for a in readmodel.free_answers(session, thread_id=thread_id)} if closed else set()
            if mine:  # only the categories this close can have made recurring
                found = drafting.drafts(readmodel.free_answers(session, categories=mine),
                                        readmodel.template_ids(session))
        cause = "thread_closed" if closed else "thread_rated"
        return ([drafted_event(d, cause=event) for d in found]
                + [effectiveness_event(v, cause, event) for v in views])

    def _validations(self, event: ThreadCompleted | ThreadFailed) -> list[PatternValidated]:
        """The ``PatternValidated`` events one closed thread gives (none for an unknown thread, one that asked
        nothing, or one already observed). Event ids derive from the close and the pattern."""
        with Session(self.engine) as session:
            thread = readmodel.load_thread(session, event.aggregate_id)
            if thread is None or thread.idea_type is None or readmodel.thread_observed(session, thread.thread_id):
                return []
            held = {p.pattern_id: p for p in readmodel.load_patterns(session, thread.user_id)}
            changes = patterns.observe(thread.user_id, thread.idea_type,
                                       readmodel.asked_questions(session, thread.thread_id), held)
        return [validated_event(p, outcome, cause=event, applied=self.pattern_policy.applies(p))
                for p, outcome in changes]

    def _evidence(self, event: AnswersRecorded | ThreadRated) -> list[PreferenceLearned]:
        """The ``PreferenceLearned`` events one answers or rating event gives (none for a cause already learned
        from, an unknown thread, or nothing to learn). Event ids derive from the cause and the preference."""
        now = event.occurred_at
        with Session(self.engine) as session:
            thread = readmodel.load_thread(session, event.aggregate_id)
            if thread is None or readmodel.seen_cause(session, event.event_id):
                return []
            held = {p.preference_id: p for p in readmodel.load_preferences(session, thread.user_id)}
            changes: list[tuple[str, preferences.Preference]] = []
            if isinstance(event, AnswersRecorded):
                # Each preference a thread's answers show counts once, however many of its answers show it; an
                # answer Hermes supplied itself (optimize) is no evidence about the user.
                shown = dict.fromkeys(o for answer in event.answers if not answer.assumed
                                      for o in preferences.observe(answer.text))
                for o in shown:
                    pid = preference_id(thread.user_id, o.category, o.key)
                    pref = held.get(pid) or preferences.Preference(thread.user_id, o.category, o.key)
                    held[pid] = preferences.learn(pref, "answer", o.value, now, self.prefs.ttl)
                    changes.append(("answer", held[pid]))
            else:
                for applied in json.loads(thread.assumptions_json):
                    pref = held.get(applied["preference_id"])
                    if pref is not None and pref.value == applied["value"]:
                        held[pref.preference_id] = preferences.learn(pref, "rating", None, now, self.prefs.ttl,
                                                                     rating=event.rating)
                        changes.append(("rating", held[pref.preference_id]))
        last = {p.preference_id: (evidence, p) for evidence, p in changes}  # one event per preference and cause
        return [learned_event(p, evidence, cause=event, thread_id=event.aggregate_id)
                for evidence, p in last.values()]

    async def on_draft1(self, draft: DraftPresented, sequence: int) -> None:
        bind_ids(thread_id=draft.aggregate_id, correlation_id=draft.correlation_id)
        # The whole log as it is now, not only up to the draft: a redelivered draft (or a replayed consumer)
        # then sees the QuestionsProposed already appended after it, even outside JetStream's dedup window.
        await self.projection.catch_up(at_least=sequence)
        snapshot = await asyncio.to_thread(self._snapshot, draft.aggregate_id)
        if self._skipped(snapshot):
            return
        assert snapshot is not None  # _skipped rules None out
        if self.classifier is not None:  # the classify job's outcome (or its timeout) decides
            await self.classifier.request(draft, snapshot.idea)
            return
        await self._decide(draft, snapshot, None, llm.DISABLED)

    async def _decide_later(self, draft: DraftPresented, classification: Classification | None,
                            outcome: str) -> None:
        """Decide on ``draft`` once its classification ended (``outcome``, see :mod:`hermes_learner.classifier`),
        on the read model as it is now: whatever decided first (the outcome or the timeout) makes this a no-op."""
        bind_ids(thread_id=draft.aggregate_id, correlation_id=draft.correlation_id)
        async with self._deciding:
            await self.projection.catch_up()
            snapshot = await asyncio.to_thread(self._snapshot, draft.aggregate_id)
            if not self._skipped(snapshot):
                assert snapshot is not None
                await self._decide(draft, snapshot, classification, outcome)

    def _skipped(self, snapshot: ThreadSnapshot | None) -> bool:
        skip = self._skip_reason(snapshot)
        if skip is not None:
            DRAFTS_SKIPPED.labels(skip).inc()
            if skip == "max_questions_zero":
                NO_QUESTIONS.labels(skip).inc()
            log.info("draft_skipped", reason=skip)
        return skip is not None

    async def _decide(self, draft: DraftPresented, snapshot: ThreadSnapshot, classification: Classification | None,
                      outcome: str) -> None:
        """Choose the questions (with the model's ``classification``, else by the rules) and append them."""
        cap = min(snapshot.max_questions, self.max_questions)
        known = ({category: preferences.assumptions(prefs) for category, prefs in preferences.known_categories(
                     snapshot.preferences, self.prefs.threshold, draft.occurred_at, snapshot.applied).items()}
                 if self.prefs.enabled else {})
        usable = self.pattern_policy.usable(snapshot.patterns) if self.prefs.enabled else []
        style = (preferences.usable_style(snapshot.preferences, self.prefs.threshold, draft.occurred_at)
                 if self.prefs.enabled else None)
        decision = domain.choose(snapshot.idea, draft.text, snapshot.templates, snapshot.stats, cap,
                                 draft_event_id=draft.event_id, policy=self.policy, known=known, patterns=usable,
                                 classification=classification, style=style)
        decision = decision._replace(reason=decision.reason + llm.reason_suffix(outcome))
        await self.store.append([self._proposed(draft, decision)])
        self._observe(decision, cap)
        CLASSIFICATIONS.labels("llm" if classification is not None else "rules", outcome).inc()
        log.info("questions_proposed", idea_type=decision.idea_type, clarity=decision.clarity,
                 questions=[q.template_id for q in decision.questions], skipped=decision.skipped,
                 reason=decision.reason)

    @staticmethod
    def _skip_reason(snapshot: ThreadSnapshot | None) -> str | None:
        """Why no ``QuestionsProposed`` is appended at all: the thread is unknown, was already decided on
        (a redelivery or a replayed consumer), is already over, or allows no questions (the orchestrator
        completes such a thread on draft 1 by itself)."""
        if snapshot is None:
            return "unknown_thread"
        if snapshot.already_proposed:
            return "already_proposed"
        if snapshot.max_questions <= 0:
            return "max_questions_zero"
        if snapshot.closed:
            return "thread_closed"
        return None

    @staticmethod
    def _proposed(draft: DraftPresented, decision: domain.Decision) -> QuestionsProposed:
        return QuestionsProposed(event_id=derived_id(draft.event_id, "questions_proposed"),
                                 aggregate_id=draft.aggregate_id, occurred_at=utcnow(),
                                 correlation_id=draft.correlation_id, causation_id=draft.event_id,
                                 questions=decision.questions, idea_type=decision.idea_type,
                                 clarity=decision.clarity, reason=decision.reason,
                                 assumptions=decision.assumptions, skipped_categories=decision.skipped)

    def _observe(self, decision: domain.Decision, cap: int) -> None:
        CLARITY.observe(decision.clarity)
        IDEAS_CLASSIFIED.labels(decision.idea_type).inc()
        for q in decision.questions:
            QUESTIONS_PROPOSED.labels(q.category).inc()
        for category in sorted({a.category for a in decision.assumptions}):
            QUESTIONS_ASSUMED.labels(category).inc()
        PATTERNS_APPLIED.labels(patterns.SKIP).inc(len(decision.skipped))
        PATTERNS_APPLIED.labels(patterns.RECURRING).inc(sum(a.source == "pattern" for a in decision.assumptions))
        if not decision.questions:
            reason = ("max_questions_zero" if cap <= 0 else
                      "clarity_stop" if decision.clarity >= self.policy.clarity_stop else "no_candidates")
            NO_QUESTIONS.labels(reason).inc()


def learned_event(pref: preferences.Preference, evidence: str, *, cause: Event | None = None,
                  thread_id: str | None = None) -> PreferenceLearned:
    """``pref`` as a :class:`PreferenceLearned`. With a ``cause`` (an answers or rating event) the id derives from
    it and the preference, so a redelivered cause appends the same event; without one (a user's request) it is
    new, and the event is its own cause."""
    event_id = derived_id(cause.event_id, "preference_learned", pref.preference_id) if cause else new_id()
    return PreferenceLearned(
        event_id=event_id, aggregate_id=pref.preference_id, occurred_at=utcnow(),
        correlation_id=cause.correlation_id if cause else event_id, causation_id=cause.event_id if cause else None,
        user_id=pref.user_id, category=pref.category, key=pref.key, value=pref.value, votes=dict(pref.votes),
        doubt=pref.doubt, confidence=pref.confidence(), stability=pref.stability(), observations=pref.observations,
        corrections=pref.corrections, source=preferences.SOURCES[evidence], evidence=evidence, thread_id=thread_id,
        expires_at=pref.expires_at)


def validated_event(pattern: patterns.Pattern, outcome: str, *, cause: ThreadCompleted | ThreadFailed,
                    applied: bool) -> PatternValidated:
    """``pattern`` after the closed thread of ``cause`` as a :class:`PatternValidated`; the id derives from the close
    and the pattern, so a redelivered close appends the same event."""
    return PatternValidated(
        event_id=derived_id(cause.event_id, "pattern_validated", pattern.pattern_id), aggregate_id=pattern.pattern_id,
        occurred_at=utcnow(), correlation_id=cause.correlation_id, causation_id=cause.event_id,
        user_id=pattern.user_id, kind=pattern.kind, idea_type=pattern.idea_type, category=pattern.category,
        outcome=outcome, validation_count=pattern.validation_count, success_count=pattern.success_count,
        confidence=pattern.confidence(), values=dict(pattern.values),
        recommended_actions=pattern.recommended_actions(), thread_id=cause.aggregate_id, applied=applied)


def effectiveness_event(view: TemplateView, cause: str, event: Event) -> TemplateEffectivenessUpdated:
    """``view``'s measurement (the numbers ``hermes.query.templates`` answers) as a
    :class:`TemplateEffectivenessUpdated` caused by ``event`` (``cause``: thread_closed or thread_rated); the id
    derives from the cause and the template, so a redelivered cause appends the same event."""
    return TemplateEffectivenessUpdated(
        event_id=derived_id(event.event_id, "template_effectiveness", view.template_id),
        aggregate_id=view.template_id, occurred_at=utcnow(), correlation_id=event.correlation_id,
        causation_id=event.event_id, cause=cause, thread_id=event.aggregate_id, times_asked=view.times_asked,
        times_answered=view.times_answered, answer_rate=view.answer_rate, rated_threads=view.rated_threads,
        mean_rating=view.mean_rating, mean_answer_time_s=view.mean_answer_time_s,
        mean_clarity_gain=view.mean_clarity_gain, trend=view.trend, expected_improvement=view.expected_improvement)


def drafted_event(draft: drafting.Draft, *, cause: Event) -> TemplateAdded:
    """``draft`` as a :class:`TemplateAdded` (status ``draft``, source ``learned``). Its id derives from the
    template id alone, so whichever close drafts it, and however often, it is one event."""
    return TemplateAdded(
        event_id=derived_id("template_drafted", draft.template_id), aggregate_id=draft.template_id,
        occurred_at=utcnow(), correlation_id=cause.correlation_id, causation_id=cause.event_id,
        category=draft.category, text=draft.text, suggestions=list(draft.suggestions),
        idea_types=list(draft.idea_types), prior_improvement=drafting.DRAFT_PRIOR_IMPROVEMENT,
        time_cost_s=drafting.DRAFT_TIME_COST_S, status="draft", source="learned", phrase=draft.phrase,
        learned_from=list(draft.thread_ids))

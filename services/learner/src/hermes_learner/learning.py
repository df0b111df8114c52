"""What the learner decides, as pure functions of what it knows (a thread's
:class:`~hermes_learner.convert.ThreadFacts`, the templates, statistics, preferences and patterns) and the events
that carry it. No I/O: the handlers
(:mod:`hermes_learner.handlers`) read the in-memory view, call these, and append what they return.

- after draft 1: the clarifying questions (:func:`choose_questions`, one ``QuestionsProposed``);
- from answers and ratings: the user's preferences (:func:`preference_evidence`, ``PreferenceLearned``);
- when a thread closes: the user's patterns (:func:`pattern_validations`, ``PatternValidated``), and with a rating
  too, each asked template's effectiveness (``TemplateEffectivenessUpdated``) and drafts of new templates
  (``TemplateAdded``, :mod:`hermes_learner.drafting`).

Event ids derive from the cause, so deciding again (a redelivery) appends the same events.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from hermes_proto.base import Event
from hermes_proto.events import (
    DraftPresented,
    PatternValidated,
    QuestionsProposed,
    TemplateAdded,
    TemplateEffectivenessUpdated,
    ThreadCompleted,
    ThreadFailed,
    ThreadRated,
)
from hermes_proto.facts import scopes as fact_scopes
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.queries import TemplateView

from hermes_learner import domain, drafting, patterns, preferences
from hermes_learner.classification import Classification
from hermes_learner.convert import ThreadFacts
from hermes_learner.policies import PatternPolicy, Policies


@dataclass(frozen=True)
class Knowledge:
    """What a draft-1 decision reads besides its thread: the askable templates (ordered by id), their statistics
    by id, and the thread's user's preferences and patterns."""

    templates: Sequence[domain.QuestionTemplate]
    stats: Mapping[str, domain.TemplateStats]
    preferences: Sequence[preferences.Preference]
    patterns: Sequence[patterns.Pattern]


def skip_reason(facts: ThreadFacts | None) -> str | None:
    """Why no ``QuestionsProposed`` is appended at all after a draft 1: the thread is unknown, was already decided on
    (a redelivery or a replayed consumer), is already over, or allows no questions (the orchestrator completes such
    a thread on draft 1 by itself). None: decide."""
    if facts is None:
        return "unknown_thread"
    if facts.proposed:
        return "already_proposed"
    if facts.max_questions <= 0:
        return "max_questions_zero"
    if facts.closed:
        return "thread_closed"
    return None


def choose_questions(
    draft: DraftPresented,
    facts: ThreadFacts,
    known: Knowledge,
    policies: Policies,
    classification: Classification | None,
    triggered: Collection[str] | None = None,
) -> domain.Decision:
    """The questions to ask after ``draft`` (:func:`hermes_learner.domain.choose`, at most the thread's and the
    service's ``max_questions``), with the facts the thread applies when learning is enabled: per slot the user's
    usable fact for the thread's project, idea type or everywhere (:func:`hermes_learner.preferences.known_slots`),
    each as an assumption (the decision lists them all; the orchestrator writes a draft 2 with those draft 1 lacked)
    and its question not asked; a usable style words the questions. ``triggered``: the templates whose triggers
    match the idea, matched already (None: matched here)."""
    prefs = policies.prefs
    cap = min(facts.max_questions, policies.max_questions)
    held: dict[str, preferences.Preference] = {}
    if prefs.enabled:
        idea_type = domain.idea_type_of(facts.idea, classification, policies.questions)
        within = fact_scopes(idea_type=idea_type, project=facts.project)
        held = preferences.known_slots(known.preferences, within, prefs.threshold, draft.occurred_at)
    assumed = {slot: next(iter(preferences.assumptions([p])), None) for slot, p in held.items()}
    style = held["style"].value if "style" in held else None
    return domain.choose(
        facts.idea,
        draft.text,
        known.templates,
        known.stats,
        cap,
        draft_event_id=draft.event_id,
        policy=policies.questions,
        known=assumed,
        classification=classification,
        style=style,
        triggered=triggered,
    )


def proposed_event(draft: DraftPresented, decision: domain.Decision) -> QuestionsProposed:
    return QuestionsProposed(
        event_id=derived_id(draft.event_id, "questions_proposed"),
        aggregate_id=draft.aggregate_id,
        occurred_at=utcnow(),
        correlation_id=draft.correlation_id,
        causation_id=draft.event_id,
        questions=decision.questions,
        idea_type=decision.idea_type,
        clarity=decision.clarity,
        reason=decision.reason,
        assumptions=decision.assumptions,
        skipped_categories=decision.skipped,
    )


def pattern_validations(
    event: ThreadCompleted | ThreadFailed,
    facts: ThreadFacts | None,
    held: Sequence[patterns.Pattern],
    policy: PatternPolicy,
) -> list[PatternValidated]:
    """The ``PatternValidated`` events one closed thread gives (none for an unknown thread, one that asked nothing,
    or one already observed); ``held``: the thread's user's patterns."""
    if facts is None or facts.idea_type is None or facts.observed:
        return []
    changes = patterns.observe(facts.user_id, facts.idea_type, facts.asked(), {p.pattern_id: p for p in held})
    return [validated_event(p, outcome, cause=event, applied=policy.applies(p)) for p, outcome in changes]


def to_measure(event: ThreadCompleted | ThreadFailed | ThreadRated, facts: ThreadFacts | None) -> list[str]:
    """The templates whose effectiveness a close (those it counted) or a rating (every one asked) measures; none
    for an unknown thread or a cause (or a thread's close) already measured."""
    if facts is None:
        return []
    closed = not isinstance(event, ThreadRated)
    measured = facts.measured_templates(include_assumed=not closed)
    if measured and facts.effectiveness_recorded(cause_id=None if closed else event.event_id, closed=closed):
        return []
    return measured


def measurement_events(
    event: ThreadCompleted | ThreadFailed | ThreadRated, views: Sequence[TemplateView], found: Sequence[drafting.Draft]
) -> list[Event]:
    """The drafts a close calls for, then one ``TemplateEffectivenessUpdated`` per measured template (``views``)."""
    cause = "thread_rated" if isinstance(event, ThreadRated) else "thread_closed"
    return [drafted_event(d, cause=event) for d in found] + [effectiveness_event(v, cause, event) for v in views]


def validated_event(
    pattern: patterns.Pattern, outcome: str, *, cause: ThreadCompleted | ThreadFailed, applied: bool
) -> PatternValidated:
    """``pattern`` after the closed thread of ``cause`` as a :class:`PatternValidated`; the id derives from the close
    and the pattern, so a redelivered close appends the same event."""
    return PatternValidated(
        event_id=derived_id(cause.event_id, "pattern_validated", pattern.pattern_id),
        aggregate_id=pattern.pattern_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
        user_id=pattern.user_id,
        kind=pattern.kind,
        idea_type=pattern.idea_type,
        category=pattern.category,
        outcome=outcome,
        validation_count=pattern.validation_count,
        success_count=pattern.success_count,
        confidence=pattern.confidence(),
        values=dict(pattern.values),
        recommended_actions=pattern.recommended_actions(),
        thread_id=cause.aggregate_id,
        applied=applied,
    )


def effectiveness_event(view: TemplateView, cause: str, event: Event) -> TemplateEffectivenessUpdated:
    """``view``'s measurement (the numbers ``hermes.query.templates`` answers) as a
    :class:`TemplateEffectivenessUpdated` caused by ``event`` (``cause``: thread_closed or thread_rated); the id
    derives from the cause and the template, so a redelivered cause appends the same event."""
    return TemplateEffectivenessUpdated(
        event_id=derived_id(event.event_id, "template_effectiveness", view.template_id),
        aggregate_id=view.template_id,
        occurred_at=utcnow(),
        correlation_id=event.correlation_id,
        causation_id=event.event_id,
        cause=cause,
        thread_id=event.aggregate_id,
        times_asked=view.times_asked,
        times_answered=view.times_answered,
        answer_rate=view.answer_rate,
        rated_threads=view.rated_threads,
        mean_rating=view.mean_rating,
        mean_answer_time_s=view.mean_answer_time_s,
        mean_clarity_gain=view.mean_clarity_gain,
        trend=view.trend,
        expected_improvement=view.expected_improvement,
    )


def drafted_event(draft: drafting.Draft, *, cause: Event) -> TemplateAdded:
    """``draft`` as a :class:`TemplateAdded` (status ``draft``, source ``learned``). Its id derives from the
    template id alone, so whichever close drafts it, and however often, it is one event."""
    return TemplateAdded(
        event_id=derived_id("template_drafted", draft.template_id),
        aggregate_id=draft.template_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id,
        causation_id=cause.event_id,
        category=draft.category,
        text=draft.text,
        suggestions=list(draft.suggestions),
        idea_types=list(draft.idea_types),
        prior_improvement=drafting.DRAFT_PRIOR_IMPROVEMENT,
        time_cost_s=drafting.DRAFT_TIME_COST_S,
        status="draft",
        source="learned",
        phrase=draft.phrase,
        learned_from=list(draft.thread_ids),
    )

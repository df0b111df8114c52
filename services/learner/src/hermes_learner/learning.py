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
from hermes_proto.ids import derived_id, new_id, utcnow
from hermes_proto.queries import TemplateView

from hermes_learner import domain, drafting, patterns, preferences
from hermes_learner.classification import Classification
from hermes_learner.convert import ThreadFacts
from hermes_learner.policies import PatternPolicy, Policies, PreferencePolicy


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
    service's ``max_questions``), with the user's usable preferences and patterns when learning is enabled (a
    preference counts only with the value draft 1 applied); ``triggered``: the templates whose triggers match the
    idea, matched already (None: matched here)."""
    prefs = policies.prefs
    cap = min(facts.max_questions, policies.max_questions)
    assumed = (
        {
            category: preferences.assumptions(held)
            for category, held in preferences.known_categories(
                known.preferences, prefs.threshold, draft.occurred_at, facts.applied
            ).items()
        }
        if prefs.enabled
        else {}
    )
    usable = policies.patterns.usable(list(known.patterns)) if prefs.enabled else []
    style = preferences.usable_style(known.preferences, prefs.threshold, draft.occurred_at) if prefs.enabled else None
    return domain.choose(
        facts.idea,
        draft.text,
        known.templates,
        known.stats,
        cap,
        draft_event_id=draft.event_id,
        policy=policies.questions,
        known=assumed,
        patterns=usable,
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


def preference_evidence(
    event: AnswersRecorded | ThreadRated,
    facts: ThreadFacts | None,
    held: Sequence[preferences.Preference],
    policy: PreferencePolicy,
) -> list[PreferenceLearned]:
    """The ``PreferenceLearned`` events one answers or rating event gives (none for a cause already learned from, an
    unknown thread, or nothing to learn); ``held``: the thread's user's preferences."""
    if facts is None or event.event_id in facts.evidence:
        return []
    now = event.occurred_at
    mine = {p.preference_id: p for p in held}
    changes: list[tuple[str, preferences.Preference]] = []
    if isinstance(event, AnswersRecorded):
        # Each preference a thread's answers show counts once, however many of its answers show it; an answer
        # Hermes supplied itself (optimize) is no evidence about the user.
        shown = dict.fromkeys(
            o for answer in event.answers if not answer.assumed for o in preferences.observe(answer.text)
        )
        for o in shown:
            pid = preference_id(facts.user_id, o.category, o.key)
            pref = mine.get(pid) or preferences.Preference(facts.user_id, o.category, o.key)
            mine[pid] = preferences.learn(pref, "answer", o.value, now, policy.ttl)
            changes.append(("answer", mine[pid]))
    else:
        for pid, value in facts.assumptions:
            pref = mine.get(pid)
            if pref is not None and pref.value == value:
                mine[pid] = preferences.learn(pref, "rating", None, now, policy.ttl, rating=event.rating)
                changes.append(("rating", mine[pid]))
    last = {p.preference_id: (evidence, p) for evidence, p in changes}  # one event per preference and cause
    return [learned_event(p, evidence, cause=event, thread_id=event.aggregate_id) for evidence, p in last.values()]


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


def learned_event(
    pref: preferences.Preference, evidence: str, *, cause: Event | None = None, thread_id: str | None = None
) -> PreferenceLearned:
    """``pref`` as a :class:`PreferenceLearned`. With a ``cause`` (an answers or rating event) the id derives from
    it and the preference, so a redelivered cause appends the same event; without one (a user's request) it is
    new, and the event is its own cause."""
    event_id = derived_id(cause.event_id, "preference_learned", pref.preference_id) if cause else new_id()
    return PreferenceLearned(
        event_id=event_id,
        aggregate_id=pref.preference_id,
        occurred_at=utcnow(),
        correlation_id=cause.correlation_id if cause else event_id,
        causation_id=cause.event_id if cause else None,
        user_id=pref.user_id,
        category=pref.category,
        key=pref.key,
        value=pref.value,
        votes=dict(pref.votes),
        doubt=pref.doubt,
        confidence=pref.confidence(),
        stability=pref.stability(),
        observations=pref.observations,
        corrections=pref.corrections,
        source=preferences.SOURCES[evidence],
        evidence=evidence,
        thread_id=thread_id,
        expires_at=pref.expires_at,
    )


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

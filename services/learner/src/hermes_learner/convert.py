"""Read-model rows as the learner's domain objects and query replies, and :class:`ThreadFacts`, what a decision knows
of one thread.

Every function takes a row of :mod:`hermes_learner.tables` as the ORM loads it or as a
:class:`hermes_proto.rowstore.RowStore` row (same attribute names), so SQL queries (:mod:`hermes_learner.queries`)
and the in-memory view (:mod:`hermes_learner.view`) give the same answers. Pure, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hermes_proto.queries import PatternView, PreferenceView, TemplateView

from hermes_learner import domain, drafting, patterns, preferences
from hermes_learner.domain import QuestionTemplate, TemplateStats
from hermes_learner.templates import slot_for

HISTORY = 2 * domain.TREND_WINDOW
"""Counted askings per template a trend reads (:func:`hermes_learner.domain.trend`: the last two windows)."""


def utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive value (as SQLite gives back what it stored) is taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def template(r: Any) -> QuestionTemplate:
    return QuestionTemplate(
        template_id=r.template_id,
        category=r.category,
        text=r.text,
        suggestions=tuple(json.loads(r.suggestions_json)),
        idea_types=tuple(json.loads(r.idea_types_json)),
        triggers=tuple(json.loads(r.triggers_json)),
        prior_improvement=r.prior_improvement,
        time_cost_s=r.time_cost_s,
        variations=json.loads(r.variations_json),
        timing=r.timing,
        slot=slot_for(r.template_id),
    )


def askable(r: Any) -> bool:
    """Whether the template of row ``r`` may be asked: active and not a draft."""
    return bool(r.active) and r.status == "active"


def stats(r: Any) -> TemplateStats:
    return TemplateStats(
        r.times_asked, r.times_answered, r.rated_threads, r.rating_sum, r.answer_time_sum_s, r.clarity_gain_sum
    )


def template_view(row: Any, measured: TemplateStats, answered: Sequence[bool]) -> TemplateView:
    """The template of ``row`` with its measured effectiveness (``answered``: whether each counted asking was
    answered, oldest first; the last :data:`HISTORY` of them are enough)."""
    rate = measured.answer_rate()
    mean_rating, time_s, gain = measured.mean_rating(), measured.mean_answer_time_s(), measured.mean_clarity_gain()
    return TemplateView(
        template_id=row.template_id,
        category=row.category,
        text=row.text,
        suggestions=json.loads(row.suggestions_json),
        idea_types=json.loads(row.idea_types_json),
        triggers=json.loads(row.triggers_json),
        prior_improvement=row.prior_improvement,
        time_cost_s=row.time_cost_s,
        status=row.status,
        active=row.active,
        source=row.source,
        variations=json.loads(row.variations_json),
        timing=row.timing,
        times_asked=measured.times_asked,
        times_answered=measured.times_answered,
        answer_rate=round(rate, 4) if rate is not None else None,
        rated_threads=measured.rated_threads,
        mean_rating=round(mean_rating, 4) if mean_rating is not None else None,
        mean_answer_time_s=round(time_s, 3) if time_s is not None else None,
        mean_clarity_gain=round(gain, 4) if gain is not None else None,
        trend=domain.trend(answered),
        expected_improvement=round(domain.improvement(template(row), measured), 4),
    )


def preference(row: Any) -> preferences.Preference:
    return preferences.Preference(
        user_id=row.user_id,
        category=row.category,
        key=row.key,
        value=row.value,
        votes=json.loads(row.votes_json),
        doubt=row.doubt,
        observations=row.observations,
        corrections=row.corrections,
        expires_at=utc(row.expires_at) if row.expires_at is not None else None,
        scope=row.scope,
        wordings=json.loads(row.wordings_json),
        question=row.question,
    )


def preference_view(row: Any, threshold: float, now: datetime) -> PreferenceView:
    held = preference(row)
    expires = utc(row.expires_at) if row.expires_at is not None else None
    return PreferenceView(
        preference_id=row.preference_id,
        user_id=row.user_id,
        category=row.category,
        key=row.key,
        value=held.wording(),
        confidence=row.confidence,
        stability=row.stability,
        observations=row.observations,
        corrections=row.corrections,
        usage=row.usage,
        source=row.source,
        evidence=row.evidence,
        votes=json.loads(row.votes_json),
        expires_at=expires,
        updated_at=utc(row.updated_at),
        applied=held.usable(threshold, now),
        scope=row.scope,
        normalized=row.value,
        question=row.question,
    )


def pattern(row: Any) -> patterns.Pattern:
    return patterns.Pattern(
        user_id=row.user_id,
        kind=row.kind,
        idea_type=row.idea_type,
        category=row.category,
        validation_count=row.validation_count,
        success_count=row.success_count,
        values=json.loads(row.values_json),
    )


def pattern_view(row: Any, threshold: float, min_validations: int) -> PatternView:
    held = pattern(row)
    return PatternView(
        pattern_id=row.pattern_id,
        user_id=row.user_id,
        kind=row.kind,
        idea_type=row.idea_type,
        category=row.category,
        validation_count=row.validation_count,
        success_count=row.success_count,
        confidence=row.confidence,
        values=dict(held.values),
        value=held.value() if row.kind == patterns.RECURRING else None,
        recommended_actions=json.loads(row.recommended_actions_json),
        outcome=row.outcome,
        thread_id=row.thread_id,
        updated_at=utc(row.updated_at),
        applied=held.usable(threshold, min_validations),
    )


def question_order(q: Any) -> tuple[int, str]:
    """The order a thread's questions are read in: as proposed (position; the id breaks a tie between proposals)."""
    return q.position, q.question_id


@dataclass(frozen=True)
class ThreadFacts:
    """What the learner's decisions know of one thread: its row's fields, its questions (rows, in
    :func:`question_order`), and which of its causes were already learned from: ``observed`` (its close changed
    some pattern), ``effectiveness`` (``(cause_id, cause)`` that gave a ``TemplateEffectivenessUpdated``) and
    ``evidence`` (cause ids that changed some preference)."""

    thread_id: str
    user_id: str
    idea: str
    max_questions: int
    idea_type: str | None
    proposed: bool
    closed: bool
    assumptions: tuple[tuple[str, str], ...]
    """``(preference_id, value)`` of each fact applied to its drafts: draft 1's (``ThreadOpened.assumptions``), then
    those the learner's proposal added (``QuestionsProposed.assumptions``); the value as the prompt showed it."""
    project: str = "default"
    questions: tuple[Any, ...] = ()
    observed: bool = False
    effectiveness: frozenset[tuple[str, str]] = frozenset()
    evidence: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        row: Any,
        questions: Iterable[Any] = (),
        observed: bool = False,
        effectiveness: Iterable[tuple[str, str]] = (),
        evidence: Iterable[str] = (),
    ) -> ThreadFacts:
        """The facts of a ``threads`` row and the rows that depend on it."""
        return cls(
            thread_id=row.thread_id,
            user_id=row.user_id,
            project=row.project,
            idea=row.idea,
            max_questions=row.max_questions,
            idea_type=row.idea_type,
            proposed=row.questions_event_id is not None,
            closed=bool(row.closed),
            assumptions=assumed(row.assumptions_json),
            questions=tuple(sorted(questions, key=question_order)),
            observed=observed,
            effectiveness=frozenset(effectiveness),
            evidence=frozenset(evidence),
        )

    @property
    def applied(self) -> frozenset[tuple[str, str]]:
        return frozenset(self.assumptions)

    def measured_templates(self, include_assumed: bool) -> list[str]:
        """The ids of the templates asked in the thread, sorted: those its close counted (not answered by Hermes
        itself) or, ``include_assumed``, every one its rating is credited to."""
        return sorted({q.template_id for q in self.questions if include_assumed or not q.assumed})

    def effectiveness_recorded(self, *, cause_id: str | None = None, closed: bool = False) -> bool:
        """Whether the thread's cause ``cause_id`` already gave some ``TemplateEffectivenessUpdated``, or (``closed``)
        its close did (a thread closes once: a repeated close measures nothing new)."""
        return any(
            (cause_id is None or c == cause_id) and (not closed or kind == "thread_closed")
            for c, kind in self.effectiveness
        )

    def asked(self) -> list[patterns.Asked]:
        """The questions the thread asked, in the order proposed, with the answers (the user's or Hermes's,
        ``assumed``)."""
        return [patterns.Asked(category=q.category, answer=q.answer, assumed=q.assumed) for q in self.questions]

    def free_answers(self, suggestions: Mapping[str, Sequence[str]]) -> list[drafting.FreeAnswer]:
        """The user's free-text answers in the closed thread, in the order proposed (``suggestions``: every
        template's, by id): :func:`free_answer` of each question."""
        found = (
            free_answer(q, self.idea_type, suggestions[q.template_id])
            for q in self.questions
            if q.template_id in suggestions
        )
        return [a for a in found if a is not None]


def free_answer(q: Any, idea_type: str | None, suggestions: Sequence[str]) -> drafting.FreeAnswer | None:
    """The answer to question row ``q`` (of a thread of ``idea_type``; ``suggestions``: its template's) when it is the
    user's free text (:func:`hermes_learner.drafting.is_free_text`) counted at its thread's close; else None."""
    if (
        q.answered_at is None
        or q.closed_at is None
        or not q.answer
        or q.assumed
        or not drafting.is_free_text(q.answer, suggestions)
    ):
        return None
    return drafting.FreeAnswer(
        thread_id=q.thread_id, category=q.category, idea_type=idea_type or "general", text=q.answer
    )


def question_slot(q: Any) -> str:
    """The slot a question row fills: its own (``Question.slot`` as projected), else its template's."""
    return q.slot or slot_for(q.template_id)


def assumed(assumptions_json: str) -> tuple[tuple[str, str], ...]:
    return tuple((a["preference_id"], a["value"]) for a in json.loads(assumptions_json))

"""Reads of the learner's read model in SQLite (sqlmodel sessions): what the request/reply desks answer
(:mod:`hermes_learner.desk`), what a decision reads of a thread no longer in memory (:func:`thread_facts`), and the
loaders the in-memory view starts from (:mod:`hermes_learner.view`). Rows become domain objects and replies through
:mod:`hermes_learner.convert`, as in memory.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime

from sqlmodel import Session, col, select

from hermes_proto.queries import PatternView, PreferenceView, TemplateView

from hermes_learner import convert, drafting, patterns, preferences
from hermes_learner.convert import ThreadFacts
from hermes_learner.domain import QuestionTemplate, TemplateStats
from hermes_learner.tables import (
    EffectivenessCauseRow,
    LearnerThreadRow,
    PatternEvidenceRow,
    PatternRow,
    PreferenceEvidenceRow,
    PreferenceRow,
    ProposedQuestionRow,
    QuestionTemplateRow,
    TemplateStatsRow,
)

# ---- templates -----------------------------------------------------------------------------------------------------


def load_templates(session: Session, askable_only: bool = True) -> list[QuestionTemplate]:
    """The templates that may be asked (active, not drafts; all with ``askable_only`` false), ordered by id
    (the decision must not depend on storage order)."""
    statement = select(QuestionTemplateRow).order_by(QuestionTemplateRow.template_id)
    if askable_only:
        statement = statement.where(QuestionTemplateRow.active).where(QuestionTemplateRow.status == "active")
    return [convert.template(r) for r in session.exec(statement).all()]


def load_stats(session: Session) -> dict[str, TemplateStats]:
    return {r.template_id: convert.stats(r) for r in session.exec(select(TemplateStatsRow)).all()}


def answered_history(session: Session, template_id: str | None = None) -> dict[str, list[bool]]:
    """Per template (only ``template_id``'s when given), whether each counted asking was answered, oldest first (for
    :func:`hermes_learner.domain.trend`)."""
    statement = (
        select(ProposedQuestionRow.template_id, ProposedQuestionRow.answered_at)
        .where(col(ProposedQuestionRow.closed_at).is_not(None))
        .order_by(
            ProposedQuestionRow.closed_at,
            ProposedQuestionRow.thread_id,
            ProposedQuestionRow.position,
            ProposedQuestionRow.question_id,
        )
    )  # unique: a rebuild's too
    if template_id is not None:
        statement = statement.where(ProposedQuestionRow.template_id == template_id)
    history: dict[str, list[bool]] = {}
    for tid, answered_at in session.exec(statement).all():
        history.setdefault(tid, []).append(answered_at is not None)
    return history


def template_views(session: Session, include_inactive: bool) -> list[TemplateView]:
    """Every template (active only unless ``include_inactive``) with its measured effectiveness."""
    statement = select(QuestionTemplateRow).order_by(QuestionTemplateRow.template_id)
    if not include_inactive:
        statement = statement.where(QuestionTemplateRow.active)
    measured, history = load_stats(session), answered_history(session)
    return [
        convert.template_view(row, measured.get(row.template_id, TemplateStats()), history.get(row.template_id, []))
        for row in session.exec(statement).all()
    ]


def template_view(session: Session, template_id: str) -> TemplateView | None:
    row = session.get(QuestionTemplateRow, template_id)
    if row is None:
        return None
    measured = session.get(TemplateStatsRow, template_id)
    return convert.template_view(
        row,
        convert.stats(measured) if measured is not None else TemplateStats(),
        answered_history(session, template_id).get(template_id, []),
    )


def template_ids(session: Session) -> set[str]:
    """Every template id the learner has (active, draft or deactivated)."""
    return set(session.exec(select(QuestionTemplateRow.template_id)).all())


def free_answers(session: Session, *, categories: Collection[str] | None = None) -> list[drafting.FreeAnswer]:
    """The users' free-text answers (:func:`hermes_learner.drafting.is_free_text` against the template's current
    suggestions) in closed threads (only to questions of ``categories``, when given), ordered by thread and
    position."""
    statement = (
        select(ProposedQuestionRow, LearnerThreadRow, QuestionTemplateRow)
        .join(LearnerThreadRow, col(LearnerThreadRow.thread_id) == ProposedQuestionRow.thread_id)
        .join(QuestionTemplateRow, col(QuestionTemplateRow.template_id) == ProposedQuestionRow.template_id)
        .where(col(ProposedQuestionRow.answered_at).is_not(None))
        .where(col(ProposedQuestionRow.closed_at).is_not(None))
        .order_by(ProposedQuestionRow.thread_id, ProposedQuestionRow.position, ProposedQuestionRow.question_id)
    )
    if categories is not None:
        statement = statement.where(col(ProposedQuestionRow.category).in_(sorted(categories)))
    found = (
        convert.free_answer(q, thread.idea_type, json.loads(row.suggestions_json))
        for q, thread, row in session.exec(statement).all()
    )
    return [a for a in found if a is not None]


# ---- threads -------------------------------------------------------------------------------------------------------


def load_thread(session: Session, thread_id: str) -> LearnerThreadRow | None:
    return session.get(LearnerThreadRow, thread_id)


def _questions(session: Session, thread_id: str) -> list[ProposedQuestionRow]:
    return list(
        session.exec(
            select(ProposedQuestionRow)
            .where(ProposedQuestionRow.thread_id == thread_id)
            .order_by(ProposedQuestionRow.position, ProposedQuestionRow.question_id)
        ).all()
    )


def thread_facts(session: Session, thread_id: str) -> ThreadFacts | None:
    """What a decision knows of ``thread_id`` (None: unknown), as the in-memory view holds it for recent threads."""
    row = session.get(LearnerThreadRow, thread_id)
    if row is None:
        return None
    observed = (
        session.exec(select(PatternEvidenceRow.pattern_id).where(PatternEvidenceRow.thread_id == thread_id)).first()
        is not None
    )
    causes = session.exec(
        select(EffectivenessCauseRow.cause_id, EffectivenessCauseRow.cause).where(
            EffectivenessCauseRow.thread_id == thread_id
        )
    ).all()
    evidence = session.exec(
        select(PreferenceEvidenceRow.cause_id).where(PreferenceEvidenceRow.thread_id == thread_id)
    ).all()
    return ThreadFacts.of(row, _questions(session, thread_id), observed, [tuple(c) for c in causes], evidence)


def open_questions(session: Session, thread_id: str) -> list[tuple[str, str, str]]:
    """``(question_id, category, slot)`` of the thread's questions with no answer yet, in the order proposed (none
    once the thread closed)."""
    return [
        (q.question_id, q.category, q.slot)
        for q in _questions(session, thread_id)
        if q.answer is None and q.closed_at is None
    ]


# ---- preferences and patterns --------------------------------------------------------------------------------------


def load_preferences(session: Session, user_id: str) -> list[preferences.Preference]:
    """``user_id``'s preferences (expired ones too), ordered by category and key."""
    rows = session.exec(
        select(PreferenceRow)
        .where(PreferenceRow.user_id == user_id)
        .order_by(PreferenceRow.category, PreferenceRow.key)
    ).all()
    return [convert.preference(r) for r in rows]


def load_preference(session: Session, preference_id: str) -> preferences.Preference | None:
    row = session.get(PreferenceRow, preference_id)
    return convert.preference(row) if row is not None else None


def preference_views(session: Session, user_id: str | None, threshold: float, now: datetime) -> list[PreferenceView]:
    """Every preference (of ``user_id``, or of every user), ordered by user, category, key."""
    statement = select(PreferenceRow).order_by(PreferenceRow.user_id, PreferenceRow.category, PreferenceRow.key)
    if user_id is not None:
        statement = statement.where(PreferenceRow.user_id == user_id)
    return [convert.preference_view(r, threshold, now) for r in session.exec(statement).all()]


def preference_view(session: Session, preference_id: str, threshold: float, now: datetime) -> PreferenceView | None:
    row = session.get(PreferenceRow, preference_id)
    return convert.preference_view(row, threshold, now) if row is not None else None


def load_patterns(session: Session, user_id: str) -> list[patterns.Pattern]:
    """``user_id``'s learned patterns, ordered by idea type, category and kind."""
    rows = session.exec(
        select(PatternRow)
        .where(PatternRow.user_id == user_id)
        .order_by(PatternRow.idea_type, PatternRow.category, PatternRow.kind)
    ).all()
    return [convert.pattern(r) for r in rows]


def pattern_views(
    session: Session, user_id: str | None, applied_only: bool, threshold: float, min_validations: int
) -> list[PatternView]:
    """Every pattern (of ``user_id``, or of every user; only the usable ones with ``applied_only``), ordered by user,
    idea type, category, kind."""
    statement = select(PatternRow).order_by(
        PatternRow.user_id, PatternRow.idea_type, PatternRow.category, PatternRow.kind
    )
    if user_id is not None:
        statement = statement.where(PatternRow.user_id == user_id)
    views = [convert.pattern_view(r, threshold, min_validations) for r in session.exec(statement).all()]
    return [v for v in views if v.applied or not applied_only]

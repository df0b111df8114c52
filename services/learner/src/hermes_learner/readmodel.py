"""The learner's SQLite read models (sqlmodel) and the projection that builds them from the log.

Tables:

- ``question_templates``: the seeded templates (upserted from :data:`~hermes_learner.templates.SEED_TEMPLATES`
  at start-up) and the log's ``TemplateAdded`` / ``TemplateEdited`` / ``TemplateDeactivated`` (an added or
  edited template is ``edited``: the seeds leave it alone; deactivation only clears ``active``);
- ``template_stats``: per template, ``times_asked`` / ``times_answered`` over FINISHED threads: when a
  thread completes or fails, each question it was asked counts once as asked, and once as answered if an
  ``AnswersRecorded`` answered it (counting at the end keeps threads still awaiting answers from looking
  unanswered), plus the answered askings' seconds to answer and clarity gains (sums); ``rated_threads`` /
  ``rating_sum`` from ``ThreadRated``; ``updated_at`` is the time of the event that last changed the row;
- ``threads``: what a decision needs about a thread (idea, its question cap, whether questions were
  proposed already, whether it is closed);
- ``proposed_questions``: each asked question, its answer and when it was given, its seconds to answer and clarity
  gain, and when its thread closed (maps answers to templates; the closed ones in order give a template's trend).
  An answer Hermes supplied itself (``Answer.assumed``) is kept with ``assumed`` set and no ``answered_at``: it is
  no answer of the user's, and such an asking is left out of ``template_stats`` (it says nothing about the template);
- ``user_preferences``: each user's learned preferences as their last ``PreferenceLearned`` left them (deleted by
  ``PreferenceForgotten``), with ``usage`` = the threads whose draft 1 applied them (``ThreadOpened.assumptions``);
- ``preference_evidence``: which causes (answers, ratings, requests) already changed which preference;
- ``learned_patterns``: each user's learned patterns as their last ``PatternValidated`` left them;
- ``pattern_evidence``: which closed threads already changed which pattern;
- ``template_effectiveness_causes``: which cause (a close or rating event) already gave which template's
  ``TemplateEffectivenessUpdated`` (so a redelivered or replayed cause appends nothing new); the measurements
  themselves stay in ``template_stats``, projected from the thread events;
- ``projection_position``: the last applied ``HERMES_EVENTS`` sequence, written in the same transaction.

Every projected value comes from an event (timestamps included), so replaying the log into an empty
database rebuilds identical rows. Each ``apply`` is idempotent on its own as well.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from functools import singledispatch

from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from hermes_proto import events as ev
from hermes_proto import sqlstore
from hermes_proto.base import Event
from hermes_proto.projection import RawMessage, Rejected, decode_batch
from hermes_proto.queries import PatternView, PreferenceView, TemplateView

from hermes_learner import domain, drafting, patterns, preferences
from hermes_learner.domain import QuestionTemplate, TemplateStats

PROJECTION = "learner"


class LearnerTable(SQLModel, registry=registry()):
    """Base of the learner's tables: their own metadata, so they never clash with another service's
    tables of the same name (``threads``) when both are imported in one process."""


class QuestionTemplateRow(LearnerTable, table=True):
    __tablename__ = "question_templates"

    template_id: str = Field(primary_key=True)
    category: str = Field(index=True)
    text: str
    suggestions_json: str = "[]"
    idea_types_json: str = "[]"
    triggers_json: str = "[]"
    prior_improvement: float
    time_cost_s: float
    variations_json: str = "{}"
    """Style → the question text in that register (a JSON object)."""
    timing: str = "any"
    status: str = "active"
    active: bool = True
    source: str = "seed"
    edited: bool = False
    """Changed through the API (``TemplateEdited``/``TemplateDeactivated``): the seeds no longer overwrite it."""


class TemplateStatsRow(LearnerTable, table=True):
    __tablename__ = "template_stats"

    template_id: str = Field(primary_key=True)
    times_asked: int = 0
    times_answered: int = 0
    rated_threads: int = 0
    rating_sum: int = 0
    answer_time_sum_s: float = 0.0
    clarity_gain_sum: float = 0.0
    updated_at: datetime


class LearnerThreadRow(LearnerTable, table=True):
    __tablename__ = "threads"

    thread_id: str = Field(primary_key=True)
    idea: str
    max_questions: int
    correlation_id: str
    opened_at: datetime
    idea_type: str | None = None
    clarity: float | None = None
    questions_event_id: str | None = None
    proposed_at: datetime | None = None
    closed: bool = False
    closed_at: datetime | None = None
    rating: int | None = None
    user_id: str = "local"
    assumptions_json: str = "[]"
    """The preferences its draft 1 applied: ``[{"preference_id", "value"}]``."""


class ProposedQuestionRow(LearnerTable, table=True):
    __tablename__ = "proposed_questions"

    question_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    position: int
    template_id: str = Field(index=True)
    category: str
    answered_at: datetime | None = None
    answer_time_s: float | None = None
    clarity_gain: float | None = None
    answer: str | None = None
    assumed: bool = False
    """Hermes answered it from what it learned (``POST /api/threads/{id}/optimize``), not the user."""
    closed_at: datetime | None = Field(default=None, index=True)
    """When the thread ended and this asking was counted (the order :func:`answered_history` reads)."""


class PreferenceRow(LearnerTable, table=True):
    """One user's learned preference, as the last ``PreferenceLearned`` left it (deleted by ``PreferenceForgotten``);
    ``usage`` counts the threads whose draft 1 applied it (``ThreadOpened.assumptions``)."""

    __tablename__ = "user_preferences"

    preference_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    category: str
    key: str
    value: str
    votes_json: str = "{}"
    doubt: float = 0.0
    confidence: float
    stability: float
    observations: int
    corrections: int = 0
    source: str
    evidence: str
    thread_id: str | None = None
    expires_at: datetime | None = None
    updated_at: datetime
    usage: int = 0


class PreferenceEvidenceRow(LearnerTable, table=True):
    """Which cause (an answers, rating or request event id) already changed which preference: a redelivered cause
    changes nothing twice, even after its preference was forgotten."""

    __tablename__ = "preference_evidence"

    cause_id: str = Field(primary_key=True)
    preference_id: str = Field(primary_key=True)


class PatternRow(LearnerTable, table=True):
    """One user's learned pattern, as the last ``PatternValidated`` left it."""

    __tablename__ = "learned_patterns"

    pattern_id: str = Field(primary_key=True)
    user_id: str = Field(index=True)
    kind: str
    idea_type: str
    category: str
    validation_count: int
    success_count: int
    confidence: float
    values_json: str = "{}"
    recommended_actions_json: str = "[]"
    outcome: str
    thread_id: str
    updated_at: datetime


class PatternEvidenceRow(LearnerTable, table=True):
    """Which closed thread already changed which pattern: a redelivered or repeated close changes nothing twice."""

    __tablename__ = "pattern_evidence"

    thread_id: str = Field(primary_key=True)
    pattern_id: str = Field(primary_key=True)


class EffectivenessCauseRow(LearnerTable, table=True):
    """Which cause already gave which template's ``TemplateEffectivenessUpdated`` (``cause``: thread_closed or
    thread_rated, of the thread ``thread_id``)."""

    __tablename__ = "template_effectiveness_causes"

    cause_id: str = Field(primary_key=True)
    template_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    cause: str


class ProjectionPosition(LearnerTable, table=True):
    __tablename__ = "projection_position"

    name: str = Field(primary_key=True)
    last_sequence: int = 0


def make_engine(url: str) -> Engine:
    """An engine for ``url`` with the tables created (SQLite in WAL mode, see :mod:`hermes_proto.sqlstore`)."""
    return sqlstore.make_engine(url, LearnerTable.metadata)


def load_position(session: Session) -> int:
    return sqlstore.load_position(session, ProjectionPosition, PROJECTION)


def save_position(session: Session, sequence: int) -> None:
    sqlstore.save_position(session, ProjectionPosition, PROJECTION, sequence)


def _utc(ts: datetime) -> datetime:
    """``ts`` in UTC; a naive value (as SQLite gives back what it stored) is taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


# ---- templates ---------------------------------------------------------------------------------


def seed_templates(session: Session, seeds: tuple[QuestionTemplate, ...]) -> None:
    """Insert or overwrite each seed's row (idempotent), except a seed changed through the API (``edited``:
    the log's edit wins); rows of other template ids are kept."""
    for t in seeds:
        row = session.get(QuestionTemplateRow, t.template_id)
        if row is not None and row.edited:
            continue
        row = row or QuestionTemplateRow(template_id=t.template_id, category=t.category, text=t.text,
                                         prior_improvement=0.0, time_cost_s=1.0, source="seed")
        _define(row, t.category, t.text, list(t.suggestions), list(t.idea_types), list(t.triggers),
                t.prior_improvement, t.time_cost_s, dict(t.variations), t.timing)
        session.add(row)
    session.commit()


def _define(row: QuestionTemplateRow, category: str, text: str, suggestions: list[str], idea_types: list[str],
            triggers: list[str], prior_improvement: float, time_cost_s: float, variations: dict[str, str],
            timing: str) -> None:
    row.category, row.text = category, text
    row.variations_json, row.timing = json.dumps(variations, sort_keys=True), timing
    row.suggestions_json = json.dumps(suggestions)
    row.idea_types_json = json.dumps(idea_types)
    row.triggers_json = json.dumps(triggers)
    row.prior_improvement, row.time_cost_s = prior_improvement, time_cost_s


def load_templates(session: Session, askable_only: bool = True) -> list[QuestionTemplate]:
    """The templates that may be asked (active, not drafts; all with ``askable_only`` false), ordered by id
    (the decision must not depend on storage order)."""
    statement = select(QuestionTemplateRow).order_by(QuestionTemplateRow.template_id)
    if askable_only:
        statement = statement.where(QuestionTemplateRow.active).where(QuestionTemplateRow.status == "active")
    return [_template(r) for r in session.exec(statement).all()]


def _template(r: QuestionTemplateRow) -> QuestionTemplate:
    return QuestionTemplate(template_id=r.template_id, category=r.category, text=r.text,
                            suggestions=tuple(json.loads(r.suggestions_json)),
                            idea_types=tuple(json.loads(r.idea_types_json)),
                            triggers=tuple(json.loads(r.triggers_json)),
                            prior_improvement=r.prior_improvement, time_cost_s=r.time_cost_s,
                            variations=json.loads(r.variations_json), timing=r.timing)


def load_stats(session: Session) -> dict[str, TemplateStats]:
    return {r.template_id: TemplateStats(r.times_asked, r.times_answered, r.rated_threads, r.rating_sum,
                                         r.answer_time_sum_s, r.clarity_gain_sum)
            for r in session.exec(select(TemplateStatsRow)).all()}


def answered_history(session: Session) -> dict[str, list[bool]]:
    """Per template, whether each counted asking was answered, oldest first (for :func:`domain.trend`)."""
    rows = session.exec(select(ProposedQuestionRow.template_id, ProposedQuestionRow.answered_at)
                        .where(col(ProposedQuestionRow.closed_at).is_not(None))
                        .order_by(ProposedQuestionRow.closed_at, ProposedQuestionRow.thread_id,
                                  ProposedQuestionRow.position)).all()  # unique: the same order after a rebuild
    history: dict[str, list[bool]] = {}
    for template_id, answered_at in rows:
        history.setdefault(template_id, []).append(answered_at is not None)
    return history


def template_views(session: Session, include_inactive: bool) -> list[TemplateView]:
    """Every template (active only unless ``include_inactive``) with its measured effectiveness."""
    statement = select(QuestionTemplateRow).order_by(QuestionTemplateRow.template_id)
    if not include_inactive:
        statement = statement.where(QuestionTemplateRow.active)
    stats, history = load_stats(session), answered_history(session)
    return [_view(row, stats.get(row.template_id, TemplateStats()), history.get(row.template_id, []))
            for row in session.exec(statement).all()]


def template_view(session: Session, template_id: str) -> TemplateView | None:
    row = session.get(QuestionTemplateRow, template_id)
    if row is None:
        return None
    return _view(row, load_stats(session).get(template_id, TemplateStats()),
                 answered_history(session).get(template_id, []))


def _view(row: QuestionTemplateRow, stats: TemplateStats, answered: list[bool]) -> TemplateView:
    rate = stats.answer_rate()
    mean_rating, time_s, gain = stats.mean_rating(), stats.mean_answer_time_s(), stats.mean_clarity_gain()
    return TemplateView(
        template_id=row.template_id, category=row.category, text=row.text,
        suggestions=json.loads(row.suggestions_json), idea_types=json.loads(row.idea_types_json),
        triggers=json.loads(row.triggers_json), prior_improvement=row.prior_improvement,
        time_cost_s=row.time_cost_s, status=row.status, active=row.active, source=row.source,
        variations=json.loads(row.variations_json), timing=row.timing,
        times_asked=stats.times_asked, times_answered=stats.times_answered,
        answer_rate=round(rate, 4) if rate is not None else None, rated_threads=stats.rated_threads,
        mean_rating=round(mean_rating, 4) if mean_rating is not None else None,
        mean_answer_time_s=round(time_s, 3) if time_s is not None else None,
        mean_clarity_gain=round(gain, 4) if gain is not None else None,
        trend=domain.trend(answered), expected_improvement=round(domain.improvement(_template(row), stats), 4))


def load_thread(session: Session, thread_id: str) -> LearnerThreadRow | None:
    return session.get(LearnerThreadRow, thread_id)


def measured_templates(session: Session, thread_id: str, include_assumed: bool) -> list[str]:
    """The ids of the templates asked in the thread, sorted: those its close counted (not answered by Hermes itself)
    or, ``include_assumed``, every one its rating is credited to."""
    return sorted({q.template_id for q in _questions(session, thread_id) if include_assumed or not q.assumed})


def effectiveness_recorded(session: Session, *, cause_id: str | None = None, closed_thread: str | None = None) -> bool:
    """Whether ``cause_id`` already gave some ``TemplateEffectivenessUpdated``, or the close of ``closed_thread``
    did (a thread closes once: a repeated close measures nothing new)."""
    statement = select(EffectivenessCauseRow)
    if cause_id is not None:
        statement = statement.where(EffectivenessCauseRow.cause_id == cause_id)
    if closed_thread is not None:
        statement = statement.where(EffectivenessCauseRow.thread_id == closed_thread,
                                    EffectivenessCauseRow.cause == "thread_closed")
    return session.exec(statement).first() is not None


def template_ids(session: Session) -> set[str]:
    """Every template id the learner has (active, draft or deactivated)."""
    return set(session.exec(select(QuestionTemplateRow.template_id)).all())


def free_answers(session: Session, *, thread_id: str | None = None,
                 categories: Collection[str] | None = None) -> list[drafting.FreeAnswer]:
    """The users' free-text answers (:func:`hermes_learner.drafting.is_free_text` against the template's current
    suggestions) in closed threads (only ``thread_id``'s, or only to questions of ``categories``, when given), ordered
    by thread and position."""
    statement = (select(ProposedQuestionRow, LearnerThreadRow, QuestionTemplateRow)
                 .join(LearnerThreadRow, col(LearnerThreadRow.thread_id) == ProposedQuestionRow.thread_id)
                 .join(QuestionTemplateRow, col(QuestionTemplateRow.template_id) == ProposedQuestionRow.template_id)
                 .where(col(ProposedQuestionRow.answered_at).is_not(None))
                 .where(col(ProposedQuestionRow.closed_at).is_not(None))
                 .order_by(ProposedQuestionRow.thread_id, ProposedQuestionRow.position))
    if thread_id is not None:
        statement = statement.where(ProposedQuestionRow.thread_id == thread_id)
    if categories is not None:
        statement = statement.where(col(ProposedQuestionRow.category).in_(sorted(categories)))
    rows = session.exec(statement).all()
    return [drafting.FreeAnswer(thread_id=q.thread_id, category=q.category, idea_type=t.idea_type or "general",
                                text=q.answer)
            for q, t, template in rows
            if q.answer and not q.assumed and drafting.is_free_text(q.answer, json.loads(template.suggestions_json))]


# ---- preferences -------------------------------------------------------------------------------


def _preference(row: PreferenceRow) -> preferences.Preference:
    return preferences.Preference(user_id=row.user_id, category=row.category, key=row.key, value=row.value,
                                  votes=json.loads(row.votes_json), doubt=row.doubt, observations=row.observations,
                                  corrections=row.corrections,
                                  expires_at=_utc(row.expires_at) if row.expires_at is not None else None)


def load_preferences(session: Session, user_id: str) -> list[preferences.Preference]:
    """``user_id``'s preferences (expired ones too), ordered by category and key."""
    rows = session.exec(select(PreferenceRow).where(PreferenceRow.user_id == user_id)
                        .order_by(PreferenceRow.category, PreferenceRow.key)).all()
    return [_preference(r) for r in rows]


def load_preference(session: Session, preference_id: str) -> preferences.Preference | None:
    row = session.get(PreferenceRow, preference_id)
    return _preference(row) if row is not None else None


def seen_cause(session: Session, cause_id: str) -> bool:
    """Whether ``cause_id`` already changed some preference (its evidence was learned)."""
    return session.exec(select(PreferenceEvidenceRow).where(PreferenceEvidenceRow.cause_id == cause_id)).first() \
        is not None


def preference_views(session: Session, user_id: str | None, threshold: float, now: datetime) -> list[PreferenceView]:
    """Every preference (of ``user_id``, or of every user), ordered by user, category, key."""
    statement = select(PreferenceRow).order_by(PreferenceRow.user_id, PreferenceRow.category, PreferenceRow.key)
    if user_id is not None:
        statement = statement.where(PreferenceRow.user_id == user_id)
    return [_preference_view(r, threshold, now) for r in session.exec(statement).all()]


def preference_view(session: Session, preference_id: str, threshold: float, now: datetime) -> PreferenceView | None:
    row = session.get(PreferenceRow, preference_id)
    return _preference_view(row, threshold, now) if row is not None else None


def _preference_view(row: PreferenceRow, threshold: float, now: datetime) -> PreferenceView:
    expires = _utc(row.expires_at) if row.expires_at is not None else None
    return PreferenceView(preference_id=row.preference_id, user_id=row.user_id, category=row.category, key=row.key,
                          value=row.value, confidence=row.confidence, stability=row.stability,
                          observations=row.observations, corrections=row.corrections, usage=row.usage,
                          source=row.source, evidence=row.evidence, votes=json.loads(row.votes_json),
                          expires_at=expires, updated_at=_utc(row.updated_at),
                          applied=_preference(row).usable(threshold, now))


# ---- patterns ----------------------------------------------------------------------------------


def _pattern(row: PatternRow) -> patterns.Pattern:
    return patterns.Pattern(user_id=row.user_id, kind=row.kind, idea_type=row.idea_type, category=row.category,
                            validation_count=row.validation_count, success_count=row.success_count,
                            values=json.loads(row.values_json))


def load_patterns(session: Session, user_id: str) -> list[patterns.Pattern]:
    """``user_id``'s learned patterns, ordered by idea type, category and kind."""
    rows = session.exec(select(PatternRow).where(PatternRow.user_id == user_id)
                        .order_by(PatternRow.idea_type, PatternRow.category, PatternRow.kind)).all()
    return [_pattern(r) for r in rows]


def pattern_views(session: Session, user_id: str | None, applied_only: bool, threshold: float,
                  min_validations: int) -> list[PatternView]:
    """Every pattern (of ``user_id``, or of every user; only the usable ones with ``applied_only``), ordered by user,
    idea type, category, kind."""
    statement = select(PatternRow).order_by(PatternRow.user_id, PatternRow.idea_type, PatternRow.category,
                                            PatternRow.kind)
    if user_id is not None:
        statement = statement.where(PatternRow.user_id == user_id)
    views = [_pattern_view(r, threshold, min_validations) for r in session.exec(statement).all()]
    return [v for v in views if v.applied or not applied_only]


def _pattern_view(row: PatternRow, threshold: float, min_validations: int) -> PatternView:
    pattern = _pattern(row)
    return PatternView(pattern_id=row.pattern_id, user_id=row.user_id, kind=row.kind, idea_type=row.idea_type,
                       category=row.category, validation_count=row.validation_count,
                       success_count=row.success_count, confidence=row.confidence, values=dict(pattern.values),
                       value=pattern.value() if row.kind == patterns.RECURRING else None,
                       recommended_actions=json.loads(row.recommended_actions_json), outcome=row.outcome,
                       thread_id=row.thread_id, updated_at=_utc(row.updated_at),
                       applied=pattern.usable(threshold, min_validations))


def thread_observed(session: Session, thread_id: str) -> bool:
    """Whether the closed thread ``thread_id`` already changed some pattern."""
    return session.exec(select(PatternEvidenceRow).where(PatternEvidenceRow.thread_id == thread_id)).first() \
        is not None


def _questions(session: Session, thread_id: str) -> list[ProposedQuestionRow]:
    return list(session.exec(select(ProposedQuestionRow).where(ProposedQuestionRow.thread_id == thread_id)
                             .order_by(ProposedQuestionRow.position)).all())


def asked_questions(session: Session, thread_id: str) -> list[patterns.Asked]:
    """The questions the thread asked, in the order proposed, with the user's answers (or Hermes's, ``assumed``)."""
    return [patterns.Asked(category=q.category, answer=q.answer, assumed=q.assumed)
            for q in _questions(session, thread_id)]


def open_questions(session: Session, thread_id: str) -> list[tuple[str, str]]:
    """``(question_id, category)`` of the thread's questions with no answer yet, in the order proposed (none once the
    thread closed)."""
    return [(q.question_id, q.category) for q in _questions(session, thread_id)
            if q.answer is None and q.closed_at is None]


# ---- projection --------------------------------------------------------------------------------


def apply_batch(engine: Engine, batch: list[RawMessage],
                decoded: list[tuple[int, Event]] | None = None) -> list[Rejected]:
    """Apply a batch of the log (``decoded``: its decodable events, when the caller decoded it already) and save its
    last sequence as the position, in one transaction; returns the undecodable events it skipped (none when given
    ``decoded``). See :class:`hermes_proto.projection.Projection`."""
    rejected: list[Rejected] = []
    if decoded is None:
        decoded, rejected = decode_batch(batch)
    with sqlstore.batch_session(engine) as session:
        for _, event in decoded:
            apply(event, session)
            session.flush()
        save_position(session, batch[-1][0])
        session.commit()
    return rejected


def _count(session: Session, question: ProposedQuestionRow, at: datetime) -> None:
    template_id, answered = question.template_id, question.answered_at is not None
    row = session.get(TemplateStatsRow, template_id) or TemplateStatsRow(template_id=template_id, updated_at=at)
    row.times_asked += 1
    row.times_answered += int(answered)
    if answered:
        row.answer_time_sum_s += question.answer_time_s or 0.0
        row.clarity_gain_sum += question.clarity_gain or 0.0
    question.closed_at = at
    session.add(question)
    row.updated_at = at
    session.add(row)
    session.flush()  # two questions of one thread may share a template row


@singledispatch
def apply(event: Event, session: Session) -> None:
    """Apply one event to the rows (events this projection does not use are ignored)."""


@apply.register
def _(e: ev.ThreadOpened, session: Session) -> None:
    if session.get(LearnerThreadRow, e.aggregate_id) is not None:
        return
    applied = [{"preference_id": a.preference_id, "value": a.value} for a in e.assumptions]
    session.add(LearnerThreadRow(thread_id=e.aggregate_id, idea=e.idea, max_questions=e.max_questions,
                                 correlation_id=e.correlation_id, opened_at=_utc(e.occurred_at),
                                 user_id=e.user_id, assumptions_json=json.dumps(applied)))
    for a in e.assumptions:
        row = session.get(PreferenceRow, a.preference_id)
        if row is not None:
            row.usage += 1
            session.add(row)


@apply.register
def _(e: ev.PreferenceLearned, session: Session) -> None:
    row = session.get(PreferenceRow, e.aggregate_id) or PreferenceRow(
        preference_id=e.aggregate_id, user_id=e.user_id, category=e.category, key=e.key, value=e.value,
        confidence=e.confidence, stability=e.stability, observations=e.observations, source=e.source,
        evidence=e.evidence, updated_at=_utc(e.occurred_at))
    row.value, row.votes_json, row.doubt = e.value, json.dumps(e.votes, sort_keys=True), e.doubt
    row.confidence, row.stability = e.confidence, e.stability
    row.observations, row.corrections = e.observations, e.corrections
    row.source, row.evidence, row.thread_id = e.source, e.evidence, e.thread_id
    row.expires_at = _utc(e.expires_at) if e.expires_at is not None else None
    row.updated_at = _utc(e.occurred_at)
    session.add(row)
    cause = e.causation_id or e.event_id
    if session.get(PreferenceEvidenceRow, (cause, e.aggregate_id)) is None:
        session.add(PreferenceEvidenceRow(cause_id=cause, preference_id=e.aggregate_id))


@apply.register
def _(e: ev.PatternValidated, session: Session) -> None:
    row = session.get(PatternRow, e.aggregate_id) or PatternRow(
        pattern_id=e.aggregate_id, user_id=e.user_id, kind=e.kind, idea_type=e.idea_type, category=e.category,
        validation_count=e.validation_count, success_count=e.success_count, confidence=e.confidence,
        outcome=e.outcome, thread_id=e.thread_id, updated_at=_utc(e.occurred_at))
    row.validation_count, row.success_count, row.confidence = e.validation_count, e.success_count, e.confidence
    row.values_json = json.dumps(e.values, sort_keys=True)
    row.recommended_actions_json = json.dumps(e.recommended_actions)
    row.outcome, row.thread_id, row.updated_at = e.outcome, e.thread_id, _utc(e.occurred_at)
    session.add(row)
    if session.get(PatternEvidenceRow, (e.thread_id, e.aggregate_id)) is None:
        session.add(PatternEvidenceRow(thread_id=e.thread_id, pattern_id=e.aggregate_id))


@apply.register
def _(e: ev.PreferenceForgotten, session: Session) -> None:
    row = session.get(PreferenceRow, e.aggregate_id)
    if row is not None:
        session.delete(row)


@apply.register
def _(e: ev.QuestionsProposed, session: Session) -> None:
    thread = session.get(LearnerThreadRow, e.aggregate_id)
    if thread is not None and thread.questions_event_id is None:
        thread.questions_event_id, thread.proposed_at = e.event_id, _utc(e.occurred_at)
        thread.idea_type, thread.clarity = e.idea_type, e.clarity
        session.add(thread)
    for position, q in enumerate(e.questions):
        if session.get(ProposedQuestionRow, q.question_id) is None:
            session.add(ProposedQuestionRow(question_id=q.question_id, thread_id=e.aggregate_id,
                                            position=position, template_id=q.template_id, category=q.category))


@apply.register
def _(e: ev.AnswersRecorded, session: Session) -> None:
    thread = session.get(LearnerThreadRow, e.aggregate_id)
    for a in e.answers:
        question = session.get(ProposedQuestionRow, a.question_id)
        # An answer after the thread closed (never sent by the orchestrator) would count in the trend only.
        if question is None or question.answer is not None or question.closed_at is not None or not a.text.strip():
            continue
        question.answer = a.text.strip()
        if a.assumed:
            question.assumed = True
        else:
            question.answered_at = _utc(e.occurred_at)
            if thread is not None and thread.proposed_at is not None:
                question.answer_time_s = max(0.0, (question.answered_at - _utc(thread.proposed_at)).total_seconds())
                question.clarity_gain = domain.clarity_gain(thread.idea, a.text)
        session.add(question)


@apply.register
def _(e: ev.TemplateAdded, session: Session) -> None:
    row = session.get(QuestionTemplateRow, e.aggregate_id)
    if row is not None and (row.source != "seed" or row.edited):
        return  # an id is added once; the control responder refuses a taken one
    # A seed of the same id (one a later version of the code brought) gives way to the user's template, so a
    # rebuild, where the seeds come first, ends with the same row.
    row = row or QuestionTemplateRow(template_id=e.aggregate_id, category=e.category, text=e.text,
                                     prior_improvement=0.0, time_cost_s=1.0)
    row.status, row.source, row.edited = e.status, e.source, True
    _define(row, e.category, e.text, list(e.suggestions), list(e.idea_types), list(e.triggers),
            e.prior_improvement, e.time_cost_s, dict(e.variations), e.timing)
    session.add(row)


@apply.register
def _(e: ev.TemplateEdited, session: Session) -> None:
    row = session.get(QuestionTemplateRow, e.aggregate_id)
    if row is None:
        return
    _define(row, e.category, e.text, list(e.suggestions), list(e.idea_types), list(e.triggers),
            e.prior_improvement, e.time_cost_s, dict(e.variations), e.timing)
    row.status, row.active, row.edited = e.status, True, True
    session.add(row)


@apply.register
def _(e: ev.TemplateEffectivenessUpdated, session: Session) -> None:
    cause = e.causation_id or e.event_id
    if session.get(EffectivenessCauseRow, (cause, e.aggregate_id)) is None:
        session.add(EffectivenessCauseRow(cause_id=cause, template_id=e.aggregate_id, thread_id=e.thread_id,
                                          cause=e.cause))


@apply.register
def _(e: ev.TemplateDeactivated, session: Session) -> None:
    row = session.get(QuestionTemplateRow, e.aggregate_id)
    if row is not None:
        row.active = False  # only that: the seeds never touch ``active``, so a seed's text still follows the code
        session.add(row)


def _close(e: Event, session: Session) -> None:
    """The thread is over: count its questions into ``template_stats`` (once; a repeated close is a no-op)."""
    thread = session.get(LearnerThreadRow, e.aggregate_id)
    if thread is None or thread.closed:
        return
    thread.closed, thread.closed_at = True, _utc(e.occurred_at)
    session.add(thread)
    for q in _questions(session, e.aggregate_id):
        if not q.assumed:
            _count(session, q, _utc(e.occurred_at))


apply.register(ev.ThreadCompleted, _close)
apply.register(ev.ThreadFailed, _close)


@apply.register
def _(e: ev.ThreadRated, session: Session) -> None:
    """Credit the thread's 1-5 rating to every template asked in it; a re-rating replaces the earlier one
    (the difference is applied), so each thread counts once per template."""
    thread = session.get(LearnerThreadRow, e.aggregate_id)
    if thread is None:
        return
    previous, thread.rating = thread.rating, e.rating
    session.add(thread)
    for template_id in sorted({q.template_id for q in _questions(session, e.aggregate_id)}):
        row = session.get(TemplateStatsRow, template_id) or TemplateStatsRow(template_id=template_id,
                                                                            updated_at=_utc(e.occurred_at))
        row.rated_threads += int(previous is None)
        row.rating_sum += e.rating - (previous or 0)
        row.updated_at = _utc(e.occurred_at)
        session.add(row)

"""The learner's read-model tables (sqlmodel definitions; SQLite in WAL mode by default) and their row classes.

- ``question_templates``: the seeded templates (upserted from :data:`~hermes_learner.templates.SEED_TEMPLATES`
  at start-up, :mod:`hermes_learner.seeding`) and the log's ``TemplateAdded`` / ``TemplateEdited`` /
  ``TemplateDeactivated`` (an added or edited template is ``edited``: the seeds leave it alone; deactivation only
  clears ``active``);
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
- ``preference_evidence``: which causes (answers, ratings, requests) already changed which preference, and the
  thread the evidence was about;
- ``learned_patterns``: each user's learned patterns as their last ``PatternValidated`` left them;
- ``pattern_evidence``: which closed threads already changed which pattern;
- ``template_effectiveness_causes``: which cause (a close or rating event) already gave which template's
  ``TemplateEffectivenessUpdated`` (so a redelivered or replayed cause appends nothing new); the measurements
  themselves stay in ``template_stats``, projected from the thread events;
- ``projection_position``: the last applied ``HERMES_EVENTS`` sequence, written in the same transaction.

A ``PersonalDataForgotten`` deletes the rows of the threads, preferences and patterns it names, and of its user
(:mod:`hermes_learner.forgetting`).

Every projected value comes from an event (timestamps included), so replaying the log into an empty database
rebuilds identical rows. Written by :mod:`hermes_learner.readmodel` (through a
:class:`hermes_proto.rowstore.RowStore`), read by :mod:`hermes_learner.queries` and held in memory by
:mod:`hermes_learner.view`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index
from sqlalchemy.engine import Engine
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from hermes_proto import sqlstore
from hermes_proto.rowstore import rows

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
    """The facts applied to its drafts: ``[{"preference_id", "value"}]``, those of draft 1
    (``ThreadOpened.assumptions``) then the ones the learner's proposal added (``QuestionsProposed.assumptions``)."""
    project: str = "default"


class ProposedQuestionRow(LearnerTable, table=True):
    __tablename__ = "proposed_questions"
    __table_args__ = (
        Index("ix_proposed_questions_trend", "template_id", "closed_at", "thread_id", "position", "question_id"),
    )  # a template's latest counted askings without a sort (the view's start)

    question_id: str = Field(primary_key=True)
    thread_id: str = Field(index=True)
    position: int
    template_id: str = Field(index=True)
    category: str
    slot: str = ""
    """What its answer fills (``Question.slot``, else its template's)."""
    text: str = ""
    """The question as asked."""
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
    scope: str = ""
    """Where it holds: everywhere (empty), ``type:<idea type>`` or ``project:<name>``."""
    wordings_json: str = "{}"
    """Value → the user's latest words for it."""
    question: str = ""


class PreferenceEvidenceRow(LearnerTable, table=True):
    """Which cause (an answers, rating or request event id) already changed which preference: a redelivered cause
    changes nothing twice, even after its preference was forgotten. ``thread_id``: the thread that
    ``PreferenceLearned`` was about (the one whose answers or rating caused it; None for a user's request about no
    thread), so the learner's in-memory view knows which causes of a thread were learned from."""

    __tablename__ = "preference_evidence"

    cause_id: str = Field(primary_key=True)
    preference_id: str = Field(primary_key=True)
    thread_id: str | None = Field(default=None, index=True)


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


Template = rows(QuestionTemplateRow)
Stats = rows(TemplateStatsRow)
Thread = rows(LearnerThreadRow)
Question = rows(ProposedQuestionRow)
Preference = rows(PreferenceRow)
PreferenceEvidence = rows(PreferenceEvidenceRow)
Pattern = rows(PatternRow)
PatternEvidence = rows(PatternEvidenceRow)
EffectivenessCause = rows(EffectivenessCauseRow)
Position = rows(ProjectionPosition)
ROWS = (
    Template,
    Stats,
    Thread,
    Question,
    Preference,
    PreferenceEvidence,
    Pattern,
    PatternEvidence,
    EffectivenessCause,
    Position,
)
VIEW_ROWS = (
    Template,
    Stats,
    Thread,
    Question,
    Preference,
    PreferenceEvidence,
    Pattern,
    PatternEvidence,
    EffectivenessCause,
)
"""The tables the decisions' in-memory view follows (:attr:`hermes_proto.rowstore.RowStore.changes`)."""

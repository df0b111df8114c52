"""Learner settings (environment variables; see README's configuration table)."""

from __future__ import annotations

from pydantic import Field

from hermes_proto.settings import BusSettings


class LearnerSettings(BusSettings):
    """Settings of the learner process (each field's variable is its name in upper case).

    - ``hermes_max_questions``: ceiling of questions per thread (seed ``max_questions_per_conversation``
      = 5); a thread's own ``ThreadOpened.max_questions`` may lower it, never raise it.
    - ``hermes_learning_enabled``: when false, questions are still proposed but ranked on the seeded
      priors alone; the measured statistics are still projected from the log (a read model must stay a
      pure function of the log, so replay does not depend on this flag) but are not used.
    - ``hermes_clarity_stop``: no questions once an idea's clarity (0..1) reaches this (seed rule 0.9).
    - ``hermes_pattern_threshold``: minimum keyword score for an idea type (see
      :func:`hermes_learner.domain.classify`); below it the idea is ``general``.
    - ``hermes_confidence_threshold``: a learned preference is applied (to draft-1 prompts, in place of the
      questions it answers) from this confidence (0..1; seed ``hermes.learning.confidence_threshold``).
    - ``hermes_preference_ttl_days``: a preference not confirmed for this many days expires (is no longer applied).
    - ``hermes_pattern_validation_threshold``: a learned pattern (see :mod:`hermes_learner.patterns`) is applied
      from this confidence (0..1; seed ``hermes.learning.pattern_validation_threshold``), and only
    - ``hermes_pattern_min_validations``: once at least this many closed threads tested it.
    - ``hermes_classification_enable_llm``: classify ideas after draft 1 with a model call (a ``classify`` job the
      orchestrator queues and the router routes) instead of the pattern rules (seed
      ``hermes.classification.enable_llm``, default false); the rules still decide when the job fails, its
      answer does not parse, or
    - ``hermes_classification_timeout_seconds``: no answer came within this many seconds of draft 1.
    - ``hermes_trigger_timeout_ms``: milliseconds all of one idea's trigger matching may take (user-supplied
      patterns, RE2, in a worker thread: :mod:`hermes_learner.triggers`); past it no trigger counts as matched.
    - ``database_url``: SQLAlchemy URL of the read models (default SQLite ``$HERMES_HOME/learner.db``).
    """

    metrics_port: int = 9102
    hermes_max_questions: int = 5
    hermes_learning_enabled: bool = True
    hermes_clarity_stop: float = 0.9
    hermes_pattern_threshold: float = 1.0
    hermes_confidence_threshold: float = Field(0.75, ge=0.0, le=1.0)
    hermes_preference_ttl_days: float = Field(180.0, gt=0.0)
    hermes_pattern_validation_threshold: float = Field(0.8, ge=0.0, le=1.0)
    hermes_pattern_min_validations: int = Field(3, ge=0)
    hermes_classification_enable_llm: bool = False
    hermes_classification_timeout_seconds: float = Field(20.0, gt=0.0)
    hermes_trigger_timeout_ms: float = Field(100.0, gt=0.0, le=10_000.0)
    database_url: str | None = None

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.hermes_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.hermes_home / 'learner.db'}"

"""Orchestrator settings (environment variables; see README's configuration table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from hermes_proto.commands import MAX_WORKFLOW_STEPS
from hermes_proto.forgetting import RetentionPolicy
from hermes_proto.partitions import PartitionSettings
from hermes_proto.settings import BusSettings


class OrchestratorSettings(BusSettings, PartitionSettings):
    """``hermes_max_questions``: default cap of clarifying questions per thread (seed:
    ``max_questions_per_conversation`` = 5); ``hermes_answer_timeout_seconds``: how long a thread waits
    for answers after draft 1 before completing on it; ``hermes_draft_max_tokens``: output bound of each
    draft (tokens); ``database_url``: SQLAlchemy URL of the read models (default SQLite in HERMES_HOME).
    Job queue: ``hermes_job_timeout_seconds`` (seed ``job_timeout_seconds``): a job not finished this long after
    it was queued is cancelled and fails with ``timeout`` (0: no timeout); ``hermes_workflow_max_steps`` and
    ``hermes_workflow_timeout_minutes`` (seed ``hermes.workflow.max_steps`` / ``timeout_minutes``; 0: none).
    Learning: the user's learned preferences with confidence >= ``hermes_confidence_threshold`` (seed
    ``hermes.learning.confidence_threshold``) are applied to every draft-1 prompt, unless
    ``hermes_learning_enabled`` is false.
    Harness: ``hermes_soul_file`` (default ``$HERMES_HOME/SOUL.md``) is the system prompt of every turn;
    ``hermes_memory_token_budget`` (estimated tokens, 0: no memories) and ``hermes_memory_max_items`` bound the
    earlier turns a new prompt is given as memory markers.
    Scale-out: ``HERMES_PARTITIONS`` / ``HERMES_PARTITION`` (:mod:`hermes_proto.partitions`): this replica decides
    the threads of one partition."""

    metrics_port: int = 9101
    hermes_max_questions: int = 5
    hermes_answer_timeout_seconds: float = 600.0
    hermes_draft_max_tokens: int = 256
    hermes_draft_temperature: float = 0.7
    database_url: str | None = None
    hermes_job_timeout_seconds: float = Field(3600.0, ge=0)
    hermes_workflow_max_steps: int = Field(10, ge=1, le=MAX_WORKFLOW_STEPS)
    hermes_workflow_timeout_minutes: float = Field(60.0, ge=0)
    hermes_learning_enabled: bool = True
    hermes_confidence_threshold: float = Field(0.75, ge=0.0, le=1.0)
    hermes_soul_file: Path | None = None
    hermes_memory_token_budget: int = Field(300, ge=0)
    hermes_memory_max_items: int = Field(3, ge=0, le=20)
    hermes_approval_timeout_seconds: float = Field(900.0, gt=0)
    """An approval nobody answers this long is denied (seconds)."""
    hermes_permissions_file: Path | None = None
    """The tool permission rules (default ``$HERMES_HOME/permissions.toml``)."""
    hermes_schedule_grace_seconds: float = Field(60.0, gt=0)
    """A due time handled later than this after it (Hermes was down) is missed (seconds)."""
    hermes_historian_interval_minutes: float = Field(60.0, gt=0)
    """How often the historian consolidates ended threads into project memory (minutes)."""
    hermes_historian_window_days: float = Field(30.0, gt=0)
    """How far back the historian reads ended threads (days)."""
    hermes_self_improve_interval_hours: float = Field(6.0, gt=0)
    """How often the recent agent runs are analysed for skills to propose (hours)."""
    hermes_self_improve_window_days: float = Field(7.0, gt=0)
    """How far back that analysis reads agent runs (days)."""
    hermes_schedule_poll_seconds: float = Field(2.0, gt=0)
    """How often the file and git triggers are looked at (seconds)."""
    hermes_retention: str = ""
    """Per aggregate type, days after which its data keys are destroyed: ``thread=90,schedule=365`` (blank: keep
    everything; :class:`hermes_proto.forgetting.RetentionPolicy`)."""
    hermes_retention_interval_minutes: float = Field(60.0, gt=0)
    """How often retention looks for expired keys (minutes)."""

    @field_validator("hermes_retention")
    @classmethod
    def _valid_retention(cls, value: str) -> str:
        RetentionPolicy.parse(value)
        return value

    def permissions_path(self) -> Path:
        return self.hermes_permissions_file or self.hermes_home / "permissions.toml"

    def soul_path(self) -> Path:
        return self.hermes_soul_file or self.hermes_home / "SOUL.md"

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.hermes_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.hermes_home / 'orchestrator.db'}"

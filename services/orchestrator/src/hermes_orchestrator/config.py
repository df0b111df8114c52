"""Orchestrator settings (environment variables; see README's configuration table)."""

from __future__ import annotations

from hermes_proto.settings import BusSettings


class OrchestratorSettings(BusSettings):
    """``hermes_max_questions``: default cap of clarifying questions per thread (seed:
    ``max_questions_per_conversation`` = 5); ``hermes_answer_timeout_seconds``: how long a thread waits
    for answers after draft 1 before completing on it; ``hermes_draft_max_tokens``: output bound of each
    draft (tokens); ``database_url``: SQLAlchemy URL of the read models (default SQLite in HERMES_HOME)."""

    metrics_port: int = 9101
    hermes_max_questions: int = 5
    hermes_answer_timeout_seconds: float = 600.0
    hermes_draft_max_tokens: int = 256
    hermes_draft_temperature: float = 0.7
    database_url: str | None = None

    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        self.hermes_home.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self.hermes_home / 'orchestrator.db'}"

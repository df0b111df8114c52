"""Gateway settings: one typed object read from the environment (see README's configuration table)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from hermes_proto.settings import BusSettings


class GatewaySettings(BusSettings):
    """``HERMES_WEB_HOST``/``HERMES_WEB_PORT``: where the HTTP server listens; ``HERMES_MAX_INPUT_LENGTH``:
    the longest idea or answer accepted (characters); ``HERMES_QUERY_TIMEOUT_SECONDS``: how long a read
    waits for the orchestrator's reply on ``hermes.query.*`` (seconds) before answering 503;
    ``HERMES_MAX_QUEUED_JOBS`` (seed ``hermes.web.max_queued_jobs``; 0 or unset: no cap): open jobs beyond which a
    submission gets 429 ``queue_full`` with ``Retry-After`` = ``HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS``;
    ``HERMES_WORKFLOW_MAX_STEPS``: the most steps a workflow may have (the orchestrator's setting of the same
    name must agree)."""

    hermes_web_host: str = "127.0.0.1"
    hermes_web_port: int = Field(default=5000, ge=0, le=65535)
    hermes_max_input_length: int = Field(default=10_000, ge=1)
    hermes_query_timeout_seconds: float = Field(default=3.0, gt=0)
    hermes_max_queued_jobs: int | None = Field(default=1000, ge=0)
    hermes_queue_full_retry_after_seconds: int = Field(default=30, ge=1)
    hermes_workflow_max_steps: int = Field(default=10, ge=1, le=100)


@lru_cache
def get_settings() -> GatewaySettings:
    """The process-wide settings, read once from the environment."""
    return GatewaySettings()

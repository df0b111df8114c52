"""Gateway settings: one typed object read from the environment (see README's configuration table)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from hermes_proto.settings import BusSettings


class GatewaySettings(BusSettings):
    """``HERMES_WEB_HOST``/``HERMES_WEB_PORT``: where the HTTP server listens; ``HERMES_MAX_INPUT_LENGTH``:
    the longest idea or answer accepted (characters); ``HERMES_QUERY_TIMEOUT_SECONDS``: how long a read
    waits for the orchestrator's reply on ``hermes.query.*`` (seconds) before answering 503."""

    hermes_web_host: str = "127.0.0.1"
    hermes_web_port: int = Field(default=5000, ge=0, le=65535)
    hermes_max_input_length: int = Field(default=10_000, ge=1)
    hermes_query_timeout_seconds: float = Field(default=3.0, gt=0)


@lru_cache
def get_settings() -> GatewaySettings:
    """The process-wide settings, read once from the environment."""
    return GatewaySettings()

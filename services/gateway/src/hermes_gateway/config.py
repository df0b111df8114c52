"""Gateway settings: one typed object read from the environment (see README's configuration table)."""

from __future__ import annotations

import re
from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from hermes_proto.settings import BusSettings

WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
"""Bot API ``setWebhook``: "secret_token: 1-256 characters. Only characters A-Z, a-z, 0-9, _ and - are allowed"."""


class GatewaySettings(BusSettings):
    """``HERMES_WEB_HOST``/``HERMES_WEB_PORT``: where the HTTP server listens; ``HERMES_MAX_INPUT_LENGTH``:
    the longest idea or answer accepted (characters); ``HERMES_QUERY_TIMEOUT_SECONDS``: how long a read
    waits for the orchestrator's reply on ``hermes.query.*`` (seconds) before answering 503;
    ``HERMES_MAX_QUEUED_JOBS`` (seed ``hermes.web.max_queued_jobs``; 0 or unset: no cap): open jobs beyond which a
    submission gets 429 ``queue_full`` with ``Retry-After`` = ``HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS``;
    ``HERMES_WORKFLOW_MAX_STEPS``: the most steps a workflow may have (the orchestrator's setting of the same
    name must agree); ``TELEGRAM_WEBHOOK_SECRET``: the ``secret_token`` given to Telegram's ``setWebhook``, which
    Telegram sends back in every webhook request (1-256 of ``[A-Za-z0-9_-]``, Telegram's own rule; unset or
    blank: ``POST /api/telegram/webhook`` is off and answers 404)."""

    # A settings error names the variable but never echoes its value: it may be a secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    hermes_web_host: str = "127.0.0.1"
    hermes_web_port: int = Field(default=5000, ge=0, le=65535)
    hermes_max_input_length: int = Field(default=10_000, ge=1)
    hermes_query_timeout_seconds: float = Field(default=3.0, gt=0)
    hermes_max_queued_jobs: int | None = Field(default=1000, ge=0)
    hermes_queue_full_retry_after_seconds: int = Field(default=30, ge=1)
    hermes_workflow_max_steps: int = Field(default=10, ge=1, le=100)
    telegram_webhook_secret: SecretStr | None = None

    @field_validator("telegram_webhook_secret", mode="before")
    @classmethod
    def _webhook_secret(cls, value: object) -> object:
        # Deployments template these variables, so "" must mean "off" rather than an empty secret.
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str) and not WEBHOOK_SECRET_PATTERN.fullmatch(value):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and - (Telegram's secret_token rule)")
        return value

    def webhook_secret(self) -> str | None:
        """The Telegram webhook secret, or None when the webhook route is off."""
        return self.telegram_webhook_secret.get_secret_value() if self.telegram_webhook_secret else None


@lru_cache
def get_settings() -> GatewaySettings:
    """The process-wide settings, read once from the environment."""
    return GatewaySettings()

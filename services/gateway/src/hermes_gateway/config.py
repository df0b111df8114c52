"""Gateway settings: one typed object read from the environment (see README's configuration table)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import NamedTuple

from limits import RateLimitItem, parse
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from hermes_proto.settings import BusSettings, OutboundSettings

from hermes_gateway.proxies import Network, parse_trusted_proxies

WEBHOOK_SECRET_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,256}")
"""Bot API ``setWebhook``: "secret_token: 1-256 characters. Only characters A-Z, a-z, 0-9, _ and - are allowed"."""


class GatewaySettings(BusSettings, OutboundSettings):
    """``HERMES_WEB_HOST``/``HERMES_WEB_PORT``: where the HTTP server listens; ``HERMES_MAX_INPUT_LENGTH``:
    the longest idea or answer accepted (characters); ``HERMES_QUERY_TIMEOUT_SECONDS``: how long a read
    waits for the orchestrator's reply on ``hermes.query.*`` (seconds) before answering 503;
    ``HERMES_MAX_QUEUED_JOBS`` (seed ``hermes.web.max_queued_jobs``; 0: no cap): open jobs beyond which a
    submission gets 429 ``queue_full`` with ``Retry-After`` = ``HERMES_QUEUE_FULL_RETRY_AFTER_SECONDS``, reserved per
    gateway process, and 503 ``queue_unknown`` while the orchestrator does not answer the count
    (:mod:`hermes_gateway.admission`);
    ``HERMES_ACCEPTED_MAX_THREADS`` / ``HERMES_ACCEPTED_TTL_SECONDS``: how many submissions this gateway remembers
    (0: none) and for how long at most (seconds), so that their threads read as ``accepted`` until the orchestrator
    shows them (:mod:`hermes_gateway.accepted`); ``HERMES_WORKFLOW_MAX_STEPS``: the most steps a workflow may have (the orchestrator's setting of the same
    name must agree); ``TELEGRAM_WEBHOOK_SECRET``: the ``secret_token`` given to Telegram's ``setWebhook``, which
    Telegram sends back in every webhook request (1-256 of ``[A-Za-z0-9_-]``, Telegram's own rule; unset or
    blank: ``POST /api/telegram/webhook`` is off and answers 404).

    Auth and limits (see :mod:`hermes_gateway.auth`): ``HERMES_API_TOKENS`` comma-separated
    ``user_id:mode:token`` entries (mode ``admin``, ``user`` or ``guest``; unset or blank: auth off, every request is user
    ``local``); ``HERMES_PROTECT_HEALTH``: health and metrics need a valid token too; ``HERMES_METRICS_TOKEN``: a
    bearer token that reads ``/metrics`` only (setting it protects ``/metrics``); ``HERMES_SESSION_SECRET``: signs
    the web session cookie (unset: a random secret per process); ``HERMES_SESSION_TTL_HOURS`` (hours);
    ``HERMES_COOKIE_SECURE``: the cookie is sent over HTTPS only; ``HERMES_RATE_LIMIT`` and
    ``HERMES_AUTH_FAILURE_LIMIT``: ``limits`` strings such as ``600/minute`` (blank or ``0``: off);
    ``HERMES_MAX_BODY_BYTES``: the largest request body (bytes); ``HERMES_CORS_ORIGINS``: comma-separated origins
    allowed cross-origin (blank: CORS off); ``HERMES_TRUSTED_PROXIES``: comma-separated addresses or CIDR networks
    of reverse proxies whose ``X-Forwarded-For`` names the client (blank: none, the peer is the client;
    :mod:`hermes_gateway.proxies`).

    ``HERMES_OUTBOUND_ALLOW`` (:class:`~hermes_proto.settings.OutboundSettings`): internal receivers a
    ``callback_url`` may name; any other non-public address is refused at submission."""

    # A settings error names the variable but never echoes its value: it may be a secret.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    hermes_web_host: str = "127.0.0.1"
    hermes_web_port: int = Field(default=5000, ge=0, le=65535)
    hermes_max_input_length: int = Field(default=10_000, ge=1)
    hermes_query_timeout_seconds: float = Field(default=3.0, gt=0)
    hermes_max_queued_jobs: int | None = Field(default=1000, ge=0)
    hermes_queue_full_retry_after_seconds: int = Field(default=30, ge=1)
    hermes_workflow_max_steps: int = Field(default=10, ge=1, le=100)
    hermes_accepted_max_threads: int = Field(default=1000, ge=0)
    hermes_accepted_ttl_seconds: float = Field(default=900.0, gt=0)
    hermes_max_chat_chars: int = Field(default=100_000, ge=1)
    """The most characters a chat completion's messages may hold together (OpenAI-compatible API)."""
    hermes_chat_timeout_seconds: float = Field(default=600.0, gt=0)
    """How long a chat completion or perception event waits for its turn's reply (seconds) before 504."""
    hermes_perception_user: str = Field(default="local", min_length=1, max_length=128)
    """The user perception events published on NATS (``hermes.perception.<source>``) belong to."""
    telegram_webhook_secret: SecretStr | None = None
    hermes_api_tokens: SecretStr | None = None
    hermes_protect_health: bool = False
    hermes_metrics_token: SecretStr | None = None
    hermes_session_secret: SecretStr | None = None
    hermes_session_ttl_hours: float = Field(default=12.0, gt=0, le=24 * 365)
    hermes_cookie_secure: bool = False
    hermes_rate_limit: str = "600/minute"
    hermes_auth_failure_limit: str = "20/minute"
    hermes_max_body_bytes: int = Field(default=1_048_576, ge=1)
    hermes_cors_origins: str = ""
    hermes_trusted_proxies: str = ""

    @field_validator("hermes_api_tokens", "hermes_metrics_token", "hermes_session_secret", mode="before")
    @classmethod
    def _blank_secret(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("hermes_api_tokens")
    @classmethod
    def _api_tokens(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_api_tokens(value.get_secret_value())
        return value

    @field_validator("hermes_rate_limit", "hermes_auth_failure_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @field_validator("hermes_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        parse_trusted_proxies(value)
        return value

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

    def api_tokens(self) -> list[ApiToken]:
        """The configured tokens; empty when auth is off."""
        return parse_api_tokens(self.hermes_api_tokens.get_secret_value()) if self.hermes_api_tokens else []

    def rate_limit(self) -> RateLimitItem | None:
        """``HERMES_RATE_LIMIT`` parsed, or None when off."""
        return parse_rate_limit(self.hermes_rate_limit)

    def auth_failure_limit(self) -> RateLimitItem | None:
        """``HERMES_AUTH_FAILURE_LIMIT`` parsed, or None when off."""
        return parse_rate_limit(self.hermes_auth_failure_limit)

    def trusted_proxies(self) -> tuple[Network, ...]:
        """``HERMES_TRUSTED_PROXIES`` parsed; empty: no proxy is trusted."""
        return parse_trusted_proxies(self.hermes_trusted_proxies)

    def cors_origins(self) -> list[str]:
        """The origins of ``HERMES_CORS_ORIGINS``; empty: CORS off."""
        return [origin.strip() for origin in self.hermes_cors_origins.split(",") if origin.strip()]


MODES = ("admin", "user", "guest")
API_USER_ID_PATTERN = re.compile(r"[A-Za-z0-9_@.+-]{1,128}")
"""A token's user id: ``hermes_proto.queries.USER_ID_PATTERN`` without ':' (it separates the entry's fields)."""


class ApiToken(NamedTuple):
    """One ``HERMES_API_TOKENS`` entry: ``user_id``, ``mode`` (user or guest) and the ``token`` itself."""

    user_id: str
    mode: str
    token: str


def parse_api_tokens(raw: str) -> list[ApiToken]:
    """``user_id:mode:token,...`` (blank entries skipped; the token is everything after the second colon, no
    spaces or commas). Raises ``ValueError`` naming the entry's position, never its text (it holds a secret)."""
    tokens: list[ApiToken] = []
    for position, entry in enumerate((e.strip() for e in raw.split(",")), start=1):
        if not entry:
            continue
        user_id, mode, token = (entry.split(":", 2) + ["", ""])[:3]
        if not API_USER_ID_PATTERN.fullmatch(user_id) or mode not in MODES or not token or re.search(r"\s", token):
            raise ValueError(
                f"entry {position} is not user_id:mode:token (user_id of [A-Za-z0-9_@.+-], "
                "mode user or guest, a token without spaces)"
            )
        if any(t.token == token for t in tokens):
            raise ValueError(f"entry {position} repeats the token of an earlier entry")
        tokens.append(ApiToken(user_id, mode, token))
    return tokens


def parse_rate_limit(value: str) -> RateLimitItem | None:
    """A ``limits`` rate string (``600/minute``, ``10 per second``), or None for blank or ``0`` (no limit).
    Raises ``ValueError`` when ``limits`` cannot parse it."""
    if not value.strip() or value.strip() == "0":
        return None
    return parse(value)


@lru_cache
def get_settings() -> GatewaySettings:
    """The process-wide settings, read once from the environment."""
    return GatewaySettings()

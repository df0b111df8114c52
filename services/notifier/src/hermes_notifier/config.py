"""Notifier settings (environment variables; see README's configuration table)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from hermes_proto.settings import BusSettings

from hermes_notifier.domain import ALERT_KINDS


class NotifierSettings(BusSettings):
    """``telegram_bot_token``: the bot's token (unset or empty: notifications are off); ``telegram_chat_id``:
    the default chat for threads that did not come from Telegram; ``telegram_api_base_url``: the Bot API
    server root (methods at ``<root>/bot<token>/<method>``; unset: python-telegram-bot's default, the official
    server); ``hermes_web_base_url``: where links in messages point; ``telegram_draft_max_chars``: how much of
    the final draft a completion message carries (characters; 0 = none; longer messages are split at 4096);
    ``telegram_send_attempts``: tries per Telegram message; ``telegram_max_retry_after_s``: the longest flood
    wait (seconds) honoured before giving up; ``telegram_retry_backoff_s``: the first wait (seconds) after a
    network error or 5xx, doubled on each further try and capped at ``telegram_max_retry_after_s``;
    ``telegram_timeout_s``: connect/read/write timeout of one call; ``notifier_max_event_age_s``: events older
    than this (seconds, by ``occurred_at``) are acknowledged without a message, so a first start on an old log
    does not replay its history into the chat (0 = no limit); ``hermes_notify_budget_alerts``: whether a
    ``budget_threshold_reached`` is announced to ``telegram_chat_id`` (false: acknowledged without a message).

    Operator alerts (to ``telegram_chat_id``): ``hermes_notify_alert_types``, a comma list of ``talos_down``,
    ``backend_down``, ``queue_full`` (unset or blank: all; ``none``: none); ``hermes_alert_cooldown_minutes``:
    after an alert of a kind is sent, others of that kind (per backend for ``backend_down``) are dropped for
    this long (0 = no cooldown); ``hermes_local_backend``: the backend whose outage is ``talos_down``.

    Callbacks to external producers: ``hermes_callback_attempts`` POSTs at most, ``hermes_callback_backoff_s``
    before the second, doubled per try up to ``hermes_callback_max_backoff_s``; ``hermes_callback_timeout_s``
    bounds one attempt (seconds)."""

    metrics_port: int = 9105
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_base_url: str | None = None
    hermes_web_base_url: str = "http://127.0.0.1:5000"
    telegram_draft_max_chars: int = 8000
    telegram_send_attempts: int = 4
    telegram_max_retry_after_s: float = 30.0
    telegram_retry_backoff_s: float = 1.0
    telegram_timeout_s: float = 10.0
    notifier_max_event_age_s: float = 86400.0
    hermes_notify_budget_alerts: bool = True
    hermes_notify_alert_types: str | None = None
    hermes_alert_cooldown_minutes: float = Field(default=15.0, ge=0)
    hermes_local_backend: str = "talos"
    hermes_callback_attempts: int = Field(default=5, ge=1, le=20)
    hermes_callback_backoff_s: float = Field(default=1.0, ge=0)
    hermes_callback_max_backoff_s: float = Field(default=30.0, ge=0)
    hermes_callback_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("telegram_bot_token", "telegram_chat_id", "telegram_api_base_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # Deployments template these variables, so "" must mean "not configured" rather than a value.
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("hermes_notify_alert_types")
    @classmethod
    def _known_alert_types(cls, value: str | None) -> str | None:
        names = _alert_names(value)
        unknown = sorted(set(names) - set(ALERT_KINDS) - {"none"})
        if unknown:
            raise ValueError(f"unknown alert type(s) {', '.join(unknown)}; known: {', '.join(ALERT_KINDS)}, none")
        return value

    def bot_token(self) -> str | None:
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else None

    def alert_types(self) -> frozenset[str]:
        """The alert kinds switched on."""
        names = _alert_names(self.hermes_notify_alert_types)
        return frozenset(ALERT_KINDS) if not names else frozenset(names) - {"none"}


def _alert_names(value: str | None) -> list[str]:
    return [name.strip().lower() for name in (value or "").split(",") if name.strip()]

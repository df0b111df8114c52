"""Notifier settings (environment variables; see README's configuration table)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from hermes_proto.settings import BusSettings, OutboundSettings

from hermes_notifier.domain import ALERT_TYPES, BUDGET_THRESHOLD, DEFAULT_COOLDOWNS_S


class NotifierSettings(BusSettings, OutboundSettings):
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
    does not replay its history into the chat (0 = no limit).

    Alerts: ``hermes_notify_alert_types``, a comma list of the alert types sent (unset or blank: all; ``none``:
    none; an unknown name is a settings error listing the known ones): ``thread_finished`` (a thread completed or
    failed, to its chat), ``job_failure`` (to the thread's chat), ``budget_threshold``, ``talos_down`` (the
    local backend ``hermes_local_backend`` marked unhealthy), ``backend_down`` (any other backend),
    ``queue_full``, ``dead_letters`` (a message was dead-lettered), the last five to ``telegram_chat_id``.
    ``hermes_notify_budget_alerts`` (older, kept so existing deployments keep their meaning): false switches
    ``budget_threshold`` off whatever the list says. ``hermes_alert_cooldown_minutes``: after an alert is sent,
    others of its type under the same aggregate (the thread, the backend, the queue, the budget, the dead
    letters) are dropped for this long (minutes; 0 = no cooldown), read from the log so it outlives a restart;
    ``hermes_alert_cooldowns``: per-type overrides, e.g. ``job_failure=5,talos_down=30`` (minutes, >= 0; an
    unknown type or a bad number is a settings error). ``thread_finished`` has no cooldown unless it is set
    here (a thread finishes once: its result is never dropped).

    Callbacks to external producers: ``hermes_callback_attempts`` POSTs at most, ``hermes_callback_backoff_s``
    before the second, doubled per try up to ``hermes_callback_max_backoff_s``; ``hermes_callback_timeout_s``
    bounds one attempt (seconds). A callback goes only to a public address, or to one ``hermes_outbound_allow``
    lists (:class:`~hermes_proto.settings.OutboundSettings`); any other is refused, never retried.

    Telegram as a channel (inbound): ``telegram_updates``: ``polling`` (long-poll ``getUpdates``, the default),
    ``webhook`` (Telegram POSTs to ``telegram_webhook_url``, the gateway's ``/api/telegram/webhook`` behind
    HTTPS, checked with ``telegram_webhook_secret``, the same ``TELEGRAM_WEBHOOK_SECRET`` the gateway has) or
    ``off``; ``telegram_allowed_chat_ids``: comma list of chat ids whose messages Hermes takes (unset: only
    ``telegram_chat_id``); other chats get one polite refusal, ever. ``telegram_poll_timeout_s``: the long
    poll's length (seconds); ``telegram_stream_interval_s``: the least time between two edits of a streaming
    draft (seconds; Telegram allows about one message per second per chat). ``hermes_max_queued_jobs`` /
    ``hermes_queue_full_retry_after_seconds``: the queue cap ideas from Telegram obey, as the gateway's do
    (:mod:`hermes_proto.admission`)."""

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
    hermes_alert_cooldowns: str | None = None
    hermes_local_backend: str = "talos"
    hermes_callback_attempts: int = Field(default=5, ge=1, le=20)
    hermes_callback_backoff_s: float = Field(default=1.0, ge=0)
    hermes_callback_max_backoff_s: float = Field(default=30.0, ge=0)
    hermes_callback_timeout_s: float = Field(default=10.0, gt=0)
    hermes_max_queued_jobs: int | None = Field(default=1000, ge=0)
    hermes_queue_full_retry_after_seconds: int = Field(default=30, ge=1)
    telegram_updates: Literal["polling", "webhook", "off"] = "polling"
    telegram_webhook_url: str | None = Field(default=None, pattern=r"^https://\S+$")
    telegram_webhook_secret: SecretStr | None = None
    telegram_allowed_chat_ids: str | None = None
    telegram_poll_timeout_s: int = Field(default=30, ge=0, le=50)
    telegram_stream_interval_s: float = Field(default=1.5, ge=0.2)

    @model_validator(mode="after")
    def _webhook_needs_url_and_secret(self) -> NotifierSettings:
        if self.telegram_updates == "webhook" and (not self.telegram_webhook_url or not self.telegram_webhook_secret):
            raise ValueError("TELEGRAM_UPDATES=webhook needs TELEGRAM_WEBHOOK_URL (https) and TELEGRAM_WEBHOOK_SECRET")
        return self

    def allowed_chats(self) -> frozenset[str]:
        """Chat ids (as strings) whose messages Hermes takes."""
        listed = [c.strip() for c in (self.telegram_allowed_chat_ids or "").split(",") if c.strip()]
        return frozenset(listed or ([self.telegram_chat_id] if self.telegram_chat_id else []))

    @field_validator(
        "telegram_bot_token",
        "telegram_chat_id",
        "telegram_api_base_url",
        "telegram_webhook_url",
        "telegram_webhook_secret",
        "telegram_allowed_chat_ids",
        mode="before",
    )
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
        unknown = sorted(set(names) - set(ALERT_TYPES) - {"none"})
        if unknown:
            raise ValueError(f"unknown alert type(s) {', '.join(unknown)}; known: {', '.join(ALERT_TYPES)}, none")
        return value

    @field_validator("hermes_alert_cooldowns")
    @classmethod
    def _valid_cooldowns(cls, value: str | None) -> str | None:
        parse_cooldowns(value)
        return value

    def bot_token(self) -> str | None:
        return self.telegram_bot_token.get_secret_value() if self.telegram_bot_token else None

    def alert_types(self) -> frozenset[str]:
        """The alert types switched on (``budget_threshold`` only if ``hermes_notify_budget_alerts`` too)."""
        names = _alert_names(self.hermes_notify_alert_types)
        enabled = frozenset(ALERT_TYPES) if not names else frozenset(names) - {"none"}
        return enabled if self.hermes_notify_budget_alerts else enabled - {BUDGET_THRESHOLD}

    def alert_cooldowns_s(self) -> dict[str, float]:
        """Per-type cooldowns (seconds) that differ from ``hermes_alert_cooldown_minutes``: the defaults of
        :data:`~hermes_notifier.domain.DEFAULT_COOLDOWNS_S`, then ``hermes_alert_cooldowns``."""
        minutes = parse_cooldowns(self.hermes_alert_cooldowns)
        return {**DEFAULT_COOLDOWNS_S, **{name: value * 60.0 for name, value in minutes.items()}}


def _alert_names(value: str | None) -> list[str]:
    return [name.strip().lower() for name in (value or "").split(",") if name.strip()]


def parse_cooldowns(value: str | None) -> dict[str, float]:
    """``"job_failure=5, talos_down=30"`` -> ``{"job_failure": 5.0, "talos_down": 30.0}`` (minutes; blank: no
    overrides). Raises ValueError on an entry without ``=``, an unknown type, a type given twice, or a value
    that is not a finite number >= 0."""
    cooldowns: dict[str, float] = {}
    for entry in _alert_names(value):
        name, sep, number = (part.strip() for part in entry.partition("="))
        if not sep:
            raise ValueError(f"cooldown {entry!r} is not <alert type>=<minutes>")
        if name not in ALERT_TYPES:
            raise ValueError(f"unknown alert type {name!r} in cooldowns; known: {', '.join(ALERT_TYPES)}")
        if name in cooldowns:
            raise ValueError(f"alert type {name!r} has two cooldowns")
        try:
            minutes = float(number)
        except ValueError:
            raise ValueError(f"cooldown of {name} is not a number of minutes: {number!r}") from None
        if not math.isfinite(minutes) or minutes < 0:
            raise ValueError(f"cooldown of {name} must be a finite number of minutes >= 0, not {number!r}")
        cooldowns[name] = minutes
    return cooldowns

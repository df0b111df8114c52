"""Settings a user may change at runtime (the web UI's settings page), and their request/reply contract.

Every setting has an environment variable (the deployment's value); those listed in :data:`USER_SETTINGS` are
``user_editable``: ``PATCH /api/config/{key}`` appends ``SettingChanged`` and the owning service applies the new
value to every decision from then on. Secrets are never in this registry, so the config API cannot show one.

Request ``hermes.query.config`` (empty body) → :class:`ConfigReply`.
Request ``hermes.control.config`` with :class:`ChangeSetting` → :class:`ConfigReply` (the changed setting only) or
``ErrorReply`` (``unknown_setting``, ``bad_request``).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec


@dataclass(frozen=True)
class SettingSpec:
    """One editable setting: ``key`` (seed name), ``env`` (its variable), ``kind`` int or float, the inclusive
    bounds, ``unit`` and what it does."""

    key: str
    env: str
    kind: type
    minimum: float
    maximum: float
    unit: str
    description: str
    service: str = "orchestrator"

    def parse(self, text: str) -> int | float:
        """``text`` as this setting's value. Raises ``ValueError`` naming the bounds."""
        try:
            value = self.kind(text.strip())
        except ValueError:
            raise ValueError(f"{self.key} takes {'a whole number' if self.kind is int else 'a number'}") from None
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"{self.key} must be between {self.minimum:g} and {self.maximum:g} ({self.unit})")
        return value


USER_SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec(
        "hermes.learning.max_questions_per_conversation",
        "HERMES_MAX_QUESTIONS",
        int,
        0,
        10,
        "questions",
        "The most clarifying questions a new thread asks.",
    ),
    SettingSpec(
        "hermes.answer_timeout_seconds",
        "HERMES_ANSWER_TIMEOUT_SECONDS",
        float,
        10,
        86_400,
        "seconds",
        "How long a new thread waits for answers before completing on draft 1.",
    ),
    SettingSpec(
        "hermes.draft.max_tokens",
        "HERMES_DRAFT_MAX_TOKENS",
        int,
        16,
        32_768,
        "tokens",
        "The longest draft or chat reply (unless a chat request names its own).",
    ),
    SettingSpec(
        "hermes.draft.temperature",
        "HERMES_DRAFT_TEMPERATURE",
        float,
        0,
        2,
        "",
        "Sampling temperature of drafts and chat turns (unless a chat request names its own).",
    ),
    SettingSpec(
        "hermes.memory.token_budget",
        "HERMES_MEMORY_TOKEN_BUDGET",
        int,
        0,
        4_000,
        "tokens",
        "Estimated tokens of memory markers a new prompt may be given (0: no memories).",
    ),
    SettingSpec(
        "hermes.memory.max_items",
        "HERMES_MEMORY_MAX_ITEMS",
        int,
        0,
        20,
        "memories",
        "The most memories one prompt is given.",
    ),
)
BY_KEY = {s.key: s for s in USER_SETTINGS}


class SettingView(msgspec.Struct, kw_only=True):
    """One editable setting as in force: ``value`` (the user's, else the deployment's), ``default`` (the
    deployment's, from ``env``), ``changed`` whether a user's value overrides it."""

    key: str
    env: str
    value: float | int
    default: float | int
    unit: str
    description: str
    minimum: float
    maximum: float
    changed: bool = False
    user_editable: bool = True
    service: str = "orchestrator"


class ConfigReply(msgspec.Struct, kw_only=True):
    settings: list[SettingView]


class ChangeSetting(msgspec.Struct, kw_only=True):
    """Set ``key`` to ``value`` (text, parsed by its spec), or back to the deployment's value with None."""

    key: str
    value: str | None
    by: str = "local"

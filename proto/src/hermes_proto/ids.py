"""Identifier and clock helpers shared by every service.

Event ids derived with :func:`derived_id` are deterministic: a handler that is
redelivered the same message emits events with the same ids, so JetStream's
``Nats-Msg-Id`` deduplication drops the repeats (idempotent consumers).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

_NAMESPACE = uuid.UUID("6f1d3c52-9a52-4c35-9d0e-3f7f8a0b8e11")


def new_id() -> str:
    """A fresh random id (UUID4 hex, 32 chars)."""
    return uuid.uuid4().hex


def derived_id(*parts: str) -> str:
    """A deterministic id (UUID5 hex, 32 chars) from the given parts, e.g. ``(cause_id, "draft_presented")``."""
    return uuid.uuid5(_NAMESPACE, "\x1f".join(parts)).hex


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)

"""Small conversions from the gateway's JSON to the typed results (shared by :mod:`hermes_sdk.models` and
:mod:`hermes_sdk.steps`). A missing or mistyped field takes the result's default: the raw dict keeps what came."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def dt(value: Any) -> datetime | None:
    """An ISO-8601 timestamp as an aware :class:`~datetime.datetime` (None when absent or unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def opt_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def opt_integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def opt_number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def flag(value: Any, default: bool = False) -> bool:
    return value if isinstance(value, bool) else default


def obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def texts(value: Any) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()

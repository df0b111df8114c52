"""Per-skill usage statistics (SQLite, one row per skill; the service keeps it in ``$HERMES_HOME/skills.db``):
how often a skill ran, how often it succeeded, how long it took and how many model tokens it saved (the caller's
estimate of what doing the same work without the skill would have cost)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS skill_stats ("
    " name TEXT PRIMARY KEY, uses INTEGER NOT NULL, successes INTEGER NOT NULL, total_ms REAL NOT NULL,"
    " tokens_saved INTEGER NOT NULL, last_used REAL NOT NULL)"
)


class SkillStats:
    """One SQLite file in WAL mode; every method is one short transaction (call from a worker thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def record(self, name: str, ok: bool, duration_ms: float, tokens_saved: int = 0) -> None:
        """Count one use of skill ``name``: ``ok`` (it succeeded), ``duration_ms`` (wall time, >= 0),
        ``tokens_saved`` (>= 0; negative values count as 0)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO skill_stats (name, uses, successes, total_ms, tokens_saved, last_used)"
                " VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET uses = uses + 1,"
                " successes = successes + excluded.successes, total_ms = total_ms + excluded.total_ms,"
                " tokens_saved = tokens_saved + excluded.tokens_saved, last_used = excluded.last_used",
                (name, int(bool(ok)), max(0.0, float(duration_ms)), max(0, int(tokens_saved)), time.time()),
            )

    def stats(self) -> dict[str, dict[str, float | int]]:
        """``{name: {"uses": int, "success_rate": 0..1, "mean_ms": float, "tokens_saved": int}}`` of every skill
        used at least once."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, uses, successes, total_ms, tokens_saved FROM skill_stats ORDER BY name"
            ).fetchall()
        return {
            name: {
                "uses": uses,
                "success_rate": successes / uses,
                "mean_ms": total_ms / uses,
                "tokens_saved": tokens_saved,
            }
            for name, uses, successes, total_ms, tokens_saved in rows
        }

    def forget(self, name: str) -> None:
        """Drop the statistics of ``name`` (a deleted skill)."""
        with self._lock:
            self._db.execute("DELETE FROM skill_stats WHERE name = ?", (name,))

    def close(self) -> None:
        with self._lock:
            self._db.close()

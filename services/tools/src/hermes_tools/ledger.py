"""The tool service's call ledger (SQLite, ``$HERMES_HOME/tools.db``): which dispatched calls it started and what
they ended with, so a call is never run twice. A call is marked ``started`` (with its dispatch) before it runs and
``done`` (with the outcome event) after its outcome is appended; a restart finds the calls left ``started``
(:meth:`CallLedger.interrupted`): a read-only one is run again, any other is reported interrupted, never re-run
blindly. A forgotten run's calls (their arguments and outputs) are deleted (:meth:`CallLedger.forget`), the bytes
zeroed in the file (``PRAGMA secure_delete``)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Collection
from pathlib import Path

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS calls ("
    " call_id TEXT PRIMARY KEY, thread_id TEXT NOT NULL, state TEXT NOT NULL,"
    " dispatched TEXT NOT NULL, outcome TEXT)"
)
CHUNK = 500
"""Run ids per ``IN (...)`` statement."""


class CallLedger:
    """One SQLite file in WAL mode; every method is one short transaction (call from a worker thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")  # a deleted call's arguments and output are zeroed in the file
        self._db.execute(SCHEMA)

    def get(self, call_id: str) -> tuple[str, str | None] | None:
        """``(state, outcome JSON)`` of ``call_id``, None when it was never started."""
        with self._lock:
            row = self._db.execute("SELECT state, outcome FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def start(self, call_id: str, thread_id: str, dispatched: bytes) -> bool:
        """Mark ``call_id`` started; False when it was already known (started or done)."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO calls (call_id, thread_id, state, dispatched) VALUES (?, ?, 'started', ?)",
                (call_id, thread_id, dispatched.decode()),
            )
        return cursor.rowcount == 1

    def done(self, call_id: str, outcome: bytes) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE calls SET state = 'done', outcome = ? WHERE call_id = ?", (outcome.decode(), call_id)
            )

    def interrupted(self) -> list[bytes]:
        """The dispatches of calls started but never done (a crash or kill during the call)."""
        with self._lock:
            rows = self._db.execute("SELECT dispatched FROM calls WHERE state = 'started'").fetchall()
        return [r[0].encode() for r in rows]

    def forget(self, run_ids: Collection[str], user_id: str = "") -> list[tuple[str, str]]:
        """Delete the calls of the runs (threads) ``run_ids`` and, when ``user_id`` is not empty, every call
        dispatched for that user; returns the deleted calls' ``(call id, project)`` (their spilled outputs are the
        caller's to remove). The write-ahead log is checkpointed after a deletion, so the main file holds no copy."""
        ids = sorted(run_ids)
        statements = [
            (f"thread_id IN ({', '.join('?' * len(chunk))})", chunk)
            for chunk in (ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK))
        ]
        if user_id:
            statements.append(("json_extract(dispatched, '$.user_id') = ?", [user_id]))
        returning = "RETURNING call_id, coalesce(json_extract(dispatched, '$.project'), 'default')"
        deleted: list[tuple[str, str]] = []
        with self._lock:
            for where, params in statements:
                rows = self._db.execute(f"DELETE FROM calls WHERE {where} {returning}", params).fetchall()
                deleted += [(r[0], str(r[1])) for r in rows]
            if deleted:  # the zeroed pages into the main file now: until a checkpoint it keeps the old ones
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    def close(self) -> None:
        with self._lock:
            self._db.close()

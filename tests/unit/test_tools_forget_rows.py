"""Forgetting in the tool service: after ``PersonalDataForgotten`` no call of the forgotten runs (or of the user) is
left in the call ledger or in the bytes of its SQLite file, their spilled full outputs are gone from the workspace,
a call of theirs still running is stopped, and a later dispatch of theirs is dropped; the other user's calls stay.
No bus: the service appends to a list, and runs the real executor's ``memory_search`` tool."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hermes_proto import agents as ag
from hermes_proto.base import Event
from hermes_proto.forgetting import PersonalDataForgotten

from hermes_tools.executor import Executor
from hermes_tools.ledger import CallLedger
from hermes_tools.redact import Redactor, spill_path
from hermes_tools.sandbox import SandboxLimits
from hermes_tools.service import ToolService

NOW = datetime(2026, 12, 1, 9, 0, 0, tzinfo=UTC)
SECRET = {"a": "xylophonealpha", "b": "banjobravo"}
"""A word only each user's texts hold (what the file's bytes are searched for)."""
HOLD = "hold"
"""A query the memory search never answers (a call still running when its run is forgotten)."""


class _Store:
    """What the service appends (instead of JetStream)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def append(self, events: list[Event]) -> list[int]:
        self.events += events
        return list(range(len(self.events) - len(events) + 1, len(self.events) + 1))


async def _memory(query: str, limit: int, user_id: str) -> list[dict[str, Any]]:
    if query == HOLD:
        await asyncio.Event().wait()
    return [{"text": f"{user_id} once said: {query} " * 20}]  # longer than the output limit: spilled


def _dispatch(u: str, run: str, n: int, query: str) -> ag.ToolCallDispatched:
    return ag.ToolCallDispatched(
        event_id=f"{u}-{run}-d{n}",
        aggregate_id=f"{u}-{run}",
        occurred_at=NOW + timedelta(seconds=n),
        correlation_id=f"{u}-{run}",
        call_id=f"{u}-{run}-call{n}",
        name="memory_search",
        arguments={"query": query},
        project=f"proj-{u}",
        user_id=f"user-{u}",
        read_only=True,
    )


def _delivery(event: Event) -> Any:
    return SimpleNamespace(message=event, msg=SimpleNamespace(headers=None))


def _forget(user: str, keys: list[str]) -> PersonalDataForgotten:
    return PersonalDataForgotten(
        event_id=f"forget-{user}",
        aggregate_id=f"privacy-{user}",
        occurred_at=NOW + timedelta(hours=1),
        correlation_id="forget",
        user_id=user,
        key_ids=keys,
    )


def _calls(path: Path) -> dict[str, tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT call_id, state, outcome FROM calls")}


async def _settle(service: ToolService, within_s: float = 5.0) -> None:
    """Wait until no call runs (raises TimeoutError after ``within_s`` seconds)."""
    async with asyncio.timeout(within_s):
        while any(service.running.values()):
            await asyncio.sleep(0.01)


def test_a_forgotten_users_calls_outputs_and_bytes_are_gone_and_the_others_stay(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "home" / "tools.db"
    ledger = CallLedger(db)
    store = _Store()
    executor = Executor(home, None, SandboxLimits(), Redactor(), _memory, output_limit=200)
    service = ToolService(store, ledger, executor)  # type: ignore[arg-type]

    async def story() -> None:
        for u in ("a", "b"):
            await service.on_event(_delivery(_dispatch(u, "run", 1, f"my {SECRET[u]} notes")))
            await service.on_event(_delivery(_dispatch(u, "other", 1, f"the {SECRET[u]} plan")))
        await _settle(service)
        await service.on_event(_delivery(_dispatch("a", "run", 2, HOLD)))  # still running at the forget
        await asyncio.sleep(0.05)
        # The event names one run's key; the other run of the user is found by the user id of its dispatch.
        await service.on_event(_delivery(_forget("user-a", ["thread.a-run", "preference.p"])))
        await _settle(service)
        await service.on_event(_delivery(_dispatch("a", "run", 3, f"late {SECRET['a']}")))  # dropped
        await _settle(service)

    asyncio.run(story())
    calls = _calls(db)
    assert sorted(calls) == ["b-other-call1", "b-run-call1"] and {s for s, _ in calls.values()} == {"done"}
    assert SECRET["b"] in repr(calls)
    # The running call was stopped with no outcome appended (that would record more of a forgotten run), and the
    # late dispatch appended nothing.
    assert [type(e) for e in store.events if e.call_id == "a-run-call2"] == [ag.ToolCallStarted]
    assert not [e for e in store.events if e.call_id == "a-run-call3"]
    assert "a-run-call2" not in service.running.get("a-run", {})
    for u, kept in (("a", False), ("b", True)):
        for run in ("run", "other"):
            assert (home / "workspace" / f"proj-{u}" / spill_path(f"{u}-{run}-call1")).exists() is kept

    ledger.close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    assert SECRET["a"].encode() not in data and SECRET["b"].encode() in data


def test_a_retention_sweep_forgets_the_named_runs_only(tmp_path: Path) -> None:
    ledger = CallLedger(tmp_path / "tools.db")
    for run in ("r1", "r2"):
        dispatched = _dispatch("a", run, 1, "q")
        ledger.start(dispatched.call_id, dispatched.aggregate_id, b"{}")  # no user id in it: matched by run only
    executor = Executor(tmp_path, None, SandboxLimits(), Redactor(), _memory)
    service = ToolService(_Store(), ledger, executor)  # type: ignore[arg-type]
    asyncio.run(service.forget(_forget("", ["thread.a-r1"])))
    assert list(_calls(tmp_path / "tools.db")) == ["a-r2-call1"]
    ledger.close()

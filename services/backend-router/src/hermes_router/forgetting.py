"""Forgetting in the router's read model (:class:`~hermes_proto.forgetting.PersonalDataForgotten`): the rows of the
threads it names (a user's forget names every thread of the user; the router keeps no user id of its own).

- ``router_jobs``: deleted (prompts, tools, error messages), open ones too: their thread's later events are sealed
  under a destroyed key, so such a job would never end. One exception: a finished job whose cost is not recorded
  yet keeps its accounting columns (tokens, prices, backend, project) with its text cleared, so the next round
  still appends its ``CostRecorded`` (spend is accounting, not content);
- ``selections``, ``thread_drafts``, ``thread_ratings``: deleted.

Kept: ``backend_stats``, ``spend``, ``backend_state``, ``budget_alerts`` (counts and sums per backend, day and
project). The engine zeroes deleted bytes (``PRAGMA secure_delete``, :func:`hermes_proto.sqlstore.make_engine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from hermes_proto.forgetting import PersonalDataForgotten, forgotten_aggregates
from hermes_proto.rowstore import Row, RowStore

from hermes_router.readmodel import CANCELLED, DONE, Draft, Job, Rating, Selection

CHUNK = 500
"""Ids per ``IN (...)`` query."""


def forget_rows(store: RowStore, event: PersonalDataForgotten) -> None:
    """Delete (or clear, see the module docstring), in the open batch of ``store``, the rows of the threads
    ``event`` names. Raises what the database raises."""
    threads = forgotten_aggregates(event).get("thread", set())
    for job in rows_where(store, Job, "thread_id", threads):
        if uncosted(job):
            clear_text(job)
        else:
            store.delete(job)
    for cls in (Selection, Draft, Rating):
        for row in rows_where(store, cls, "thread_id", threads):
            store.delete(row)


def uncosted(job: Any) -> bool:
    """A finished job whose ``CostRecorded`` the router has still to append."""
    return job.status in (DONE, CANCELLED) and job.completion_event_id is not None and not job.cost_recorded


def clear_text(job: Any) -> None:
    """Clear what a job row holds of its thread's content (what recording its cost needs stays)."""
    job.messages_json, job.tools_json, job.tool_choice = "[]", "[]", None
    job.last_error_message, job.deferred_reason, job.trace_headers_json = None, None, "{}"


def rows_where(store: RowStore, cls: type[Row], column: str, values: Iterable[str]) -> list[Any]:
    """The rows of ``cls`` (through ``store``, so a deletion reaches its cache) whose ``column`` is in ``values``."""
    table = cls.__table__
    keys = [table.c[k] for k in cls.__key__]
    ordered = sorted(values)
    store.flush()  # the query must see the rows this batch added
    found = []
    for start in range(0, len(ordered), CHUNK):
        query = select(*keys).where(table.c[column].in_(ordered[start : start + CHUNK]))
        found += [store.get(cls, *key) for key in store.connection.execute(query).all()]
    return [row for row in found if row is not None]

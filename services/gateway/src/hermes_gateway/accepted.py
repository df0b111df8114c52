"""Threads this gateway accepted that the orchestrator does not show yet.

A submission answered 202 is a command waiting durably in ``HERMES_COMMANDS``; until the orchestrator has taken it
and applied its ``ThreadOpened`` (it may be restarting after a crash, or busy), it knows nothing of the thread.
The gateway remembers each ``SubmitIdea`` / ``SubmitWorkflow`` it published, so that reading such a thread answers
it as ``accepted`` (HTTP 200) instead of 404 ``thread_not_found`` or 503 ``bus_unavailable``.

Limits, by design: the memory is this gateway process's own, so a gateway restart forgets it and, with several
gateway replicas, only the one that accepted a submission answers for it; it holds at most ``max_threads`` threads,
each for ``ttl_s`` seconds at most (``cachetools.TTLCache``: the least recently used goes first when full), and
forgets a thread as soon as the orchestrator shows it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Final

from cachetools import TTLCache

from hermes_proto.base import Command
from hermes_proto.commands import SubmitIdea, SubmitWorkflow
from hermes_proto.queries import ThreadView
from hermes_proto.rpc import BusUnavailable

from hermes_gateway.observability import ACCEPTED_THREADS, ACCEPTED_VIEWS

if TYPE_CHECKING:
    from hermes_gateway.adapters import ReadModel

ACCEPTED: Final = "accepted"
"""The status of a thread this gateway answers from its own memory: its submission was accepted (202) and waits for
the orchestrator. Not a status of the log (:mod:`hermes_proto.threads` holds those): no event carries it and no
service but the gateway produces it. Such a view is open, neither answerable nor ratable, and has no jobs yet."""


@dataclass(frozen=True)
class _Submission:
    thread_id: str
    idea: str
    kind: str
    channel: str
    user_id: str
    origin: dict[str, str]
    project: str
    private: bool
    priority: int
    created_at: datetime


class AcceptedThreads:
    """The submissions this gateway published, by thread id: at most ``max_threads`` (0: remember none), each
    kept ``ttl_s`` seconds at most (on ``timer``, seconds)."""

    def __init__(
        self, max_threads: int = 1000, ttl_s: float = 900.0, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self._cache: TTLCache[str, _Submission] | None = (
            TTLCache(maxsize=max_threads, ttl=ttl_s, timer=timer) if max_threads > 0 else None
        )

    def remember(self, command: Command) -> None:
        """Keep ``command`` if it opens a thread (``SubmitIdea``, ``SubmitWorkflow``); other commands are ignored."""
        if self._cache is None:
            return
        match command:
            case SubmitIdea():
                idea, kind = command.idea, "idea"
            case SubmitWorkflow():
                idea, kind = command.title or command.steps[0].prompt, "workflow"
            case _:
                return
        self._cache[command.thread_id] = _Submission(
            thread_id=command.thread_id,
            idea=idea,
            kind=kind,
            channel=command.channel,
            user_id=command.user_id,
            origin=dict(command.origin),
            project=command.project,
            private=command.private,
            priority=command.priority,
            created_at=command.issued_at,
        )
        ACCEPTED_THREADS.set(len(self._cache))

    def view(self, thread_id: str) -> ThreadView | None:
        """The ``accepted`` view of a thread this gateway accepted and still remembers, else None."""
        found = self._cache.get(thread_id) if self._cache is not None else None
        if found is None:
            return None
        return ThreadView(
            thread_id=found.thread_id,
            idea=found.idea,
            channel=found.channel,
            user_id=found.user_id,
            origin=found.origin,
            status=ACCEPTED,
            project=found.project,
            private=found.private,
            priority=found.priority,
            created_at=found.created_at,
            updated_at=found.created_at,
            kind=found.kind,
        )

    def forget(self, thread_id: str) -> None:
        """The orchestrator shows the thread now: no need to answer for it any longer."""
        if self._cache is not None and self._cache.pop(thread_id, None) is not None:
            ACCEPTED_THREADS.set(len(self._cache))

    def __len__(self) -> int:
        return len(self._cache) if self._cache is not None else 0


async def thread_or_accepted(
    read_model: ReadModel,
    accepted: AcceptedThreads,
    thread_id: str,
    min_sequence: int | None = None,
    *,
    counted: bool = True,
) -> ThreadView | None:
    """The orchestrator's view of ``thread_id`` (read-your-writes up to ``min_sequence``; None: the log's end now).
    When the orchestrator does not know the thread, or does not answer, the ``accepted`` view if this gateway
    accepted its submission; else None (unknown) or, when the orchestrator did not answer, the
    :class:`BusUnavailable` it raised. ``counted``: an accepted view given counts in
    ``hermes_gateway_accepted_views_total`` (not for a look at the owner before the route's own read)."""
    try:
        position = min_sequence if min_sequence is not None else await read_model.log_position()
        thread = await read_model.thread(thread_id, position)
    except BusUnavailable:
        view = accepted.view(thread_id)
        if view is None:
            raise
        if counted:
            ACCEPTED_VIEWS.labels("unanswered").inc()
        return view
    if thread is not None:
        accepted.forget(thread_id)
        return thread
    view = accepted.view(thread_id)
    if view is not None and counted:
        ACCEPTED_VIEWS.labels("not_opened_yet").inc()
    return view

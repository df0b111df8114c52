"""``GET /api/threads/{thread_id}/events``: the thread live, as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Request, Response
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.background import BackgroundTask

from hermes_gateway.accepted import AcceptedThreads, thread_or_accepted
from hermes_gateway.adapters import ReadModel
from hermes_gateway.auth import Principal, auth_enabled, visible
from hermes_gateway.deps import AcceptedDep, BusDep, PrincipalDep, ReadModelDep, SettingsDep, thread_not_found
from hermes_gateway.domain import check_id, check_last_event_id
from hermes_gateway.live import ThreadFeed, terminal_sequence
from hermes_gateway.observability import SSE_CLIENTS

router = APIRouter(prefix="/api/threads", tags=["events"])

RETRY_MS = 2000
PING_S = 10
SHUTDOWN_GRACE_S = 2.0
OWNER_POLL_S = 0.1


async def _stream_thread_id(thread_id: str, request: Request) -> str:
    # Only the id's form: whose thread it is, _check_owner decides (ThreadId would refuse another user's at once).
    request.state.thread_id = check_id(thread_id, "thread_id")
    return thread_id


async def _check_owner(
    read_model: ReadModel, accepted: AcceptedThreads, principal: Principal, thread_id: str, wait_s: float
) -> None:
    """While auth is on, a thread is streamed only to its owner. Until the orchestrator (or this gateway's memory of
    its submissions) shows it as the principal's, it is asked again every :data:`OWNER_POLL_S` seconds for up to
    ``wait_s`` seconds (a thread just submitted); then 404 ``thread_not_found``. Unknown and another user's take
    this same path to the same answer after the same wait, so neither the answer nor its time tells them apart."""
    if not auth_enabled(principal):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while True:
        thread = await thread_or_accepted(read_model, accepted, thread_id, read_model.seen_position(), counted=False)
        if thread is not None and visible(principal, thread.user_id):
            return
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise thread_not_found(thread_id)
        await asyncio.sleep(min(OWNER_POLL_S, remaining))


@router.get("/{thread_id}/events", response_model=None)
async def thread_events(
    thread_id: Annotated[str, Depends(_stream_thread_id)],
    bus: BusDep,
    read_model: ReadModelDep,
    accepted: AcceptedDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """Everything already in the log for the thread, then live events, as ``event: <event type>`` with the
    event JSON as data and the ``HERMES_EVENTS`` sequence as ``id``; token deltas as ``event: token``
    ``{"job_id", "seq", "text", "done"}`` (no id). ``Last-Event-ID`` resumes after that sequence. The stream
    ends after ``thread_completed`` or ``thread_failed``; resuming past that answers 204 so a browser's
    EventSource stops reconnecting. The thread need not exist yet (watch right after submitting); while auth is
    on it must be the principal's, waited for up to ``HERMES_QUERY_TIMEOUT_SECONDS`` to appear.
    Errors: 400 ``invalid_id``, 400 ``invalid_last_event_id`` (not a sequence from 0 to 2^63 - 1), 404
    ``thread_not_found`` (auth on: unknown or another user's, alike and after the same wait), 503
    ``bus_unavailable``."""
    start_after = check_last_event_id(last_event_id)
    await _check_owner(read_model, accepted, principal, thread_id, settings.hermes_query_timeout_seconds)
    if start_after:
        finished_at = await terminal_sequence(bus.js, thread_id)
        if finished_at is not None and finished_at <= start_after:
            return Response(status_code=204)
    feed = ThreadFeed(bus, thread_id, start_after)
    await feed.open()
    SSE_CLIENTS.inc()
    closed = False

    async def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            SSE_CLIENTS.dec()
            await feed.close()

    shutdown = anyio.Event()

    async def stop_on_shutdown() -> None:
        await shutdown.wait()
        feed.stop()

    async def events() -> AsyncIterator[ServerSentEvent | bytes]:
        watcher = asyncio.create_task(stop_on_shutdown())
        try:
            yield ServerSentEvent(comment=f"thread {thread_id}", retry=RETRY_MS)
            async for batch in feed.batches():  # one write per burst, the same bytes as one event at a time
                yield b"".join(ServerSentEvent(i.data, event=i.event, id=i.id).encode() for i in batch)
        finally:
            watcher.cancel()
            with anyio.CancelScope(shield=True):  # the client left: still unsubscribe
                await close()

    # On server shutdown the stream ends cleanly; the browser reconnects later with Last-Event-ID.
    return EventSourceResponse(
        events(),
        ping=PING_S,
        background=BackgroundTask(close),
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_S,
    )

"""Answers ``hermes.query.*`` request/reply (msgspec JSON): threads, jobs and sessions from the read model (after
waiting, bounded, for a ``min_sequence`` the asker has seen), the queue and health from the in-memory fold."""

from __future__ import annotations

import asyncio

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.codec import UNDECODABLE
from hermes_proto.projection import Projection
from hermes_proto.queries import (
    QUERY_THREADS,
    ErrorReply,
    JobQuery,
    JobReply,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
)
from hermes_proto.rpc import answering
from hermes_proto.sessions import (
    ExportQuery,
    MemoryQuery,
    MemoryReply,
    SessionQuery,
    SessionReply,
    SessionsQuery,
    SessionsReply,
    SoulReply,
    SoulRequest,
)

from hermes_orchestrator import sessions, views
from hermes_orchestrator.fold import ThreadFold
from hermes_orchestrator.soul import SoulFile


class QueryResponder:
    """Subscribes (queue group ``orchestrator``) and answers; a reply over the server's max payload is answered
    ``too_large``, a query that does not decode ``bad_request``."""

    def __init__(
        self, nc: NATS, engine: Engine, projection: Projection, fold: ThreadFold, soul: SoulFile | None = None
    ) -> None:
        self.nc = nc
        self.engine = engine
        self.projection = projection
        self.fold = fold
        self.soul = soul

    async def subscribe(self) -> None:
        """One subscription per subject; each handler runs inside :func:`~hermes_proto.rpc.answering`, so a request
        it fails on is answered with an ``ErrorReply`` rather than left to the asker's timeout."""
        responders = [
            (subjects.QUERY_THREAD, self._thread),
            (subjects.QUERY_JOB, self._job),
            (QUERY_THREADS, self._threads),
            (subjects.QUERY_HEALTH, self._health),
            (subjects.QUERY_QUEUE, self._queue),
            (subjects.QUERY_SESSIONS, self._sessions),
            (subjects.QUERY_SESSION, self._session),
            (subjects.QUERY_MEMORY, self._memory),
            (subjects.QUERY_EXPORT, self._export),
        ]
        if self.soul is not None:
            responders.append((subjects.CONTROL_SOUL, self._soul))
        for subject, handler in responders:
            await self.nc.subscribe(subject, queue="orchestrator", cb=answering("orchestrator", handler))

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        with Session(self.engine) as session:
            return fn(session, *args)

    def _read_core(self, fn, *args):  # noqa: ANN001, ANN202
        """``fn`` on a Core connection (no ORM session: the views read records)."""
        with self.engine.connect() as conn:
            return fn(conn, *args)

    async def _respond(self, msg: Msg, reply: object) -> None:
        """Answer ``msg``; a reply over the server's max payload is answered ``too_large`` instead (so the asker
        gets an error at once rather than waiting for its timeout)."""
        if not msg.reply:
            return
        data = msgspec.json.encode(reply)
        if len(data) > self.nc.max_payload:
            data = msgspec.json.encode(
                ErrorReply(
                    code="too_large",
                    message=f"The answer is {len(data)} bytes, over "
                    f"the NATS max payload ({self.nc.max_payload} bytes).",
                )
            )
        await msg.respond(data)

    async def _decode(self, msg: Msg, query_type: type):  # noqa: ANN202
        """The query, or None after answering ``bad_request``."""
        try:
            return msgspec.json.decode(msg.data or b"{}", type=query_type)
        except UNDECODABLE as exc:
            await self._respond(msg, ErrorReply(code="bad_request", message=str(exc)))
            return None

    async def _query(self, msg: Msg, query_type: type):  # noqa: ANN202
        """:meth:`_decode`, then a wait (at most 2 s) until the read model holds the query's ``min_sequence`` (the
        position the asker has seen), so it reads its own writes."""
        query = await self._decode(msg, query_type)
        if query is not None and getattr(query, "min_sequence", 0):
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        return query

    async def _thread(self, msg: Msg) -> None:
        if (query := await self._query(msg, ThreadQuery)) is None:
            return
        view = await asyncio.to_thread(self._read_core, views.thread_view, query.thread_id)
        await self._respond(msg, ThreadReply(found=view is not None, thread=view))

    async def _job(self, msg: Msg) -> None:
        if (query := await self._decode(msg, JobQuery)) is None:
            return
        view = await asyncio.to_thread(self._read_core, views.job, query.thread_id, query.job_id)
        await self._respond(msg, JobReply(found=view is not None, job=view))

    async def _threads(self, msg: Msg) -> None:
        if (query := await self._query(msg, ThreadListQuery)) is None:
            return
        limit = max(1, min(query.limit, 500))
        if query.ids_only:
            ids = await asyncio.to_thread(self._read_core, views.recent_thread_ids, limit, query.origin, query.user_id)
            await self._respond(msg, ThreadListReply(threads=[], thread_ids=ids))
            return
        found = await asyncio.to_thread(self._read_core, views.recent_threads, limit, query.origin, query.user_id)
        await self._respond(msg, ThreadListReply(threads=found))

    async def _sessions(self, msg: Msg) -> None:
        if (query := await self._query(msg, SessionsQuery)) is None:
            return
        found = await asyncio.to_thread(self._read, sessions.recent_sessions, query.user_id, query.channel, query.limit)
        await self._respond(msg, SessionsReply(sessions=found))

    async def _session(self, msg: Msg) -> None:
        if (query := await self._query(msg, SessionQuery)) is None:
            return
        view = await asyncio.to_thread(self._read, sessions.session_view, query.session_id, query.last_turns)
        await self._respond(msg, SessionReply(found=view is not None, session=sessions.fit(view, self._budget())))

    async def _memory(self, msg: Msg) -> None:
        if (query := await self._query(msg, MemoryQuery)) is None:
            return
        hits = await asyncio.to_thread(self._read, sessions.search_memory, query.q, query.user_id, query.limit)
        await self._respond(msg, MemoryReply(hits=hits))

    async def _export(self, msg: Msg) -> None:
        if (query := await self._query(msg, ExportQuery)) is None:
            return
        try:
            page = await asyncio.to_thread(self._read, sessions.export_page, query, self._budget())
        except ValueError as exc:
            await self._respond(msg, ErrorReply(code="bad_request", message=str(exc)))
            return
        await self._respond(msg, page)

    def _budget(self) -> int:
        """Bytes a reply may take: half the server's max payload, leaving room for the envelope and headers."""
        return self.nc.max_payload // 2

    async def _soul(self, msg: Msg) -> None:
        if (request := await self._decode(msg, SoulRequest)) is None:
            return
        assert self.soul is not None
        try:
            text = (
                await asyncio.to_thread(self.soul.write, request.text)
                if request.text is not None
                else await asyncio.to_thread(self.soul.read)
            )
        except OSError as exc:
            await self._respond(msg, ErrorReply(code="internal", message=f"SOUL.md: {exc.strerror or exc}"))
            return
        await self._respond(msg, SoulReply(text=text, path=str(self.soul.path)))

    async def _queue(self, msg: Msg) -> None:
        if self.fold.partition.single:
            await self._respond(msg, self.fold.queue_depth())
        else:  # the fold holds one partition's threads; the rows hold every thread's
            await self._respond(msg, await asyncio.to_thread(self._read_core, views.queue_depth))

    async def _health(self, msg: Msg) -> None:
        await self._respond(
            msg,
            {
                "service": "orchestrator",
                "status": "ok",
                "position": self.projection.position,
                "folded": self.projection.folded,
                "partition": self.fold.partition.index,
                "partitions": self.fold.partition.count,
            },
        )

"""Answers the agent runs' queries (``hermes.query.agent_run``, ``agent_runs``, ``approvals``, ``agent_profiles``)
from the read model, after waiting (bounded) for a ``min_sequence`` the asker has seen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from sqlalchemy.engine import Engine
from sqlmodel import Session

from hermes_proto import subjects
from hermes_proto.agent_queries import (
    AgentRunQuery,
    AgentRunReply,
    AgentRunsQuery,
    AgentRunsReply,
    ApprovalsQuery,
    ApprovalsReply,
    ProfilesReply,
    ProfileView,
)
from hermes_proto.codec import UNDECODABLE
from hermes_proto.projection import Projection
from hermes_proto.queries import ErrorReply
from hermes_proto.rpc import answering

from hermes_orchestrator import agent_views
from hermes_orchestrator.profiles import AgentProfile


class AgentQueries:
    def __init__(
        self, nc: NATS, engine: Engine, projection: Projection, profiles: Callable[[], dict[str, AgentProfile]]
    ) -> None:
        self.nc, self.engine, self.projection, self.profiles = nc, engine, projection, profiles

    async def subscribe(self) -> None:
        for subject, handler in (
            (subjects.QUERY_AGENT_RUN, self._run),
            (subjects.QUERY_AGENT_RUNS, self._runs),
            (subjects.QUERY_APPROVALS, self._approvals),
            (subjects.QUERY_AGENT_PROFILES, self._profiles),
        ):
            await self.nc.subscribe(subject, queue="orchestrator", cb=answering("orchestrator", handler))

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        with Session(self.engine) as session:
            return fn(session, *args)

    async def _query(self, msg: Msg, query_type: type):  # noqa: ANN202
        try:
            query = msgspec.json.decode(msg.data or b"{}", type=query_type)
        except UNDECODABLE as exc:
            await self._respond(msg, ErrorReply(code="bad_request", message=str(exc)))
            return None
        if getattr(query, "min_sequence", 0):
            await self.projection.wait_for(query.min_sequence, timeout_s=2.0)
        return query

    async def _respond(self, msg: Msg, reply: object) -> None:
        if msg.reply:
            data = msgspec.json.encode(reply)
            if len(data) > self.nc.max_payload:
                data = msgspec.json.encode(ErrorReply(code="too_large", message=f"{len(data)} bytes"))
            await msg.respond(data)

    async def _run(self, msg: Msg) -> None:
        if (q := await self._query(msg, AgentRunQuery)) is None:
            return
        view = await asyncio.to_thread(self._read, agent_views.agent_run, q.run_id, q.user_id)
        await self._respond(msg, AgentRunReply(found=view is not None, run=view))

    async def _runs(self, msg: Msg) -> None:
        if (q := await self._query(msg, AgentRunsQuery)) is None:
            return
        runs = await asyncio.to_thread(self._read, agent_views.agent_runs, q.user_id, q.limit)
        await self._respond(msg, AgentRunsReply(runs=runs))

    async def _approvals(self, msg: Msg) -> None:
        if (q := await self._query(msg, ApprovalsQuery)) is None:
            return
        found = await asyncio.to_thread(
            self._read, agent_views.approvals, q.user_id, q.status, q.run_id, q.approval_id, q.limit
        )
        await self._respond(msg, ApprovalsReply(approvals=found))

    async def _profiles(self, msg: Msg) -> None:
        profiles = await asyncio.to_thread(self.profiles)
        views = [
            ProfileView(
                name=p.name,
                description=p.description,
                tools=list(p.tools),
                max_iterations=p.max_iterations,
                approval_required=list(p.approval_required),
                timeout_s=p.timeout_s,
            )
            for p in sorted(profiles.values(), key=lambda p: p.name)
        ]
        await self._respond(msg, ProfilesReply(profiles=views))

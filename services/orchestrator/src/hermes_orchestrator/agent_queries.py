"""Answers the agent runs' queries (``hermes.query.agent_run``, ``agent_runs``, ``approvals``, ``agent_profiles``)
from the read model, after waiting (bounded) for a ``min_sequence`` the asker has seen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from nats.aio.msg import Msg

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
from hermes_proto.rpc import answering

from hermes_orchestrator import agent_views
from hermes_orchestrator.profiles import AgentProfile
from hermes_orchestrator.queries import QueryResponder


class AgentQueries:
    """The agent queries, answered with the orchestrator's :class:`QueryResponder` (its read model, its decoding of
    queries and its ``too_large`` / ``bad_request`` replies)."""

    def __init__(self, base: QueryResponder, profiles: Callable[[], dict[str, AgentProfile]]) -> None:
        self.base, self.profiles = base, profiles
        self._respond = base._respond

    async def subscribe(self) -> None:
        for subject, handler in (
            (subjects.QUERY_AGENT_RUN, self._run),
            (subjects.QUERY_AGENT_RUNS, self._runs),
            (subjects.QUERY_APPROVALS, self._approvals),
            (subjects.QUERY_AGENT_PROFILES, self._profiles),
        ):
            await self.base.nc.subscribe(subject, queue="orchestrator", cb=answering("orchestrator", handler))

    def _read(self, fn, *args):  # noqa: ANN001, ANN202
        return self.base._read(fn, *args)

    async def _run(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, AgentRunQuery)) is None:
            return
        view = await asyncio.to_thread(self._read, agent_views.agent_run, q.run_id, q.user_id)
        await self._respond(msg, AgentRunReply(found=view is not None, run=view))

    async def _runs(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, AgentRunsQuery)) is None:
            return
        runs = await asyncio.to_thread(self._read, agent_views.agent_runs, q.user_id, q.limit)
        await self._respond(msg, AgentRunsReply(runs=runs))

    async def _approvals(self, msg: Msg) -> None:
        if (q := await self.base._query(msg, ApprovalsQuery)) is None:
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

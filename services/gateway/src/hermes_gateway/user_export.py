"""Everything Hermes holds about one user, gathered for the data-rights export (:mod:`hermes_gateway.routes.me_export`)
from the queries the read models already answer over NATS request/reply; nothing here writes.

:func:`collect` returns ``{"user_id", "exported_at" (ISO-8601 UTC), "format": "hermes-export/1", "threads",
"sessions", "preferences", "patterns", "memory_entries", "agent_runs", "approvals", "schedules", "skill_proposals",
"truncated"}``: each section a list of the contract's views as JSON (times ISO-8601 UTC, costs in cents, durations in
ms). Every query is scoped to the user and every item is checked again to be theirs, so another user's data cannot
appear. The list queries have hard caps and no cursor (:data:`CAPS`); a cap that is reached is worked around where a
partition is known (proposals by status, memory entries by project, approvals through their runs, a session's older
turns through the paged training export), and whatever still may be missing is named in ``truncated`` as
``{"section", "id" (the item, or null for the whole section), "reason"}``: nothing is left out silently.

Read-your-writes: the export holds every event of ``HERMES_EVENTS`` up to ``position`` (the log's end when it was asked
for): every query carries it as ``min_sequence`` (each service waits at most about 2 s, then answers from where it is).

Raises :class:`~hermes_proto.rpc.BusUnavailable`, :class:`~hermes_proto.rpc.Refused` or
:class:`~hermes_proto.rpc.BadReply` when a query fails, except that one item too large for a NATS message
(``too_large``) is listed in ``truncated`` instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS

from hermes_proto import skill_proposals as sp
from hermes_proto import subjects as subj
from hermes_proto.agent_queries import (
    AgentRunQuery,
    AgentRunReply,
    AgentRunsQuery,
    AgentRunsReply,
    AgentRunView,
    ApprovalsQuery,
    ApprovalsReply,
)
from hermes_proto.ids import utcnow
from hermes_proto.memory_queries import MemoryEntriesQuery, MemoryEntriesReply, MemoryEntryView
from hermes_proto.queries import (
    QUERY_THREADS,
    PatternsQuery,
    PatternsReply,
    PreferencesQuery,
    PreferencesReply,
    ThreadListQuery,
    ThreadListReply,
    ThreadQuery,
    ThreadReply,
    ThreadView,
)
from hermes_proto.rpc import Refused, ask
from hermes_proto.schedule_queries import ScheduleQuery, ScheduleReply, SchedulesQuery, SchedulesReply
from hermes_proto.sessions import ExportQuery, ExportReply, SessionQuery, SessionReply, SessionsQuery, SessionsReply
from hermes_proto.threads import TURN_KINDS

FORMAT = "hermes-export/1"
SECTIONS = tuple(
    "threads sessions preferences patterns memory_entries agent_runs approvals schedules skill_proposals".split()
)
CAPS = {"threads": 500, "agent_runs": 500, "approvals": 500, "schedules": 1000, "schedule_runs": 500}
CAPS |= {"memory_entries": 2000, "skill_proposals": 500, "export_page": 1000}
"""The most items the answering services return for one query (their own clamps)."""
PARALLEL = 8
"""Queries in flight at once: the export must not crowd out every other request the orchestrator answers."""
ORCHESTRATOR, LEARNER = "The orchestrator", "The learner"
SPEAKERS = {"system": "system", "human": "user", "gpt": "assistant"}
"""ShareGPT's speaker names back to OpenAI's chat roles (the training export writes ShareGPT)."""
T = TypeVar("T")


async def collect(nc: NATS, user_id: str, timeout_s: float, position: int) -> dict[str, Any]:
    """The export document of ``user_id`` (see the module's docstring), read once the orchestrator applied the
    ``HERMES_EVENTS`` sequence ``position``; each query waits at most ``timeout_s`` seconds."""
    return await _Collector(nc, user_id, timeout_s, position).run()


class _Collector:
    def __init__(self, nc: NATS, user_id: str, timeout_s: float, position: int) -> None:
        self.nc, self.user, self.timeout_s, self.at = nc, user_id, timeout_s, position
        self.truncated: list[dict[str, Any]] = []
        self._gate = asyncio.Semaphore(PARALLEL)

    def cut(self, section: str, reason: str, item: str | None = None) -> None:
        self.truncated.append({"section": section, "id": item, "reason": reason})

    async def ask(self, subject: str, query: msgspec.Struct, reply_type: type[T], what: str = ORCHESTRATOR) -> T:
        async with self._gate:
            return await ask(self.nc, what, subject, query, reply_type, self.timeout_s)

    async def item(self, section: str, item: str, subject: str, query: msgspec.Struct, reply_type: type[T]) -> T | None:
        """One item's query; None (and ``truncated`` says so) when it is too large for one NATS message."""
        try:
            return await self.ask(subject, query, reply_type)
        except Refused as exc:
            if exc.code != "too_large":
                raise
            self.cut(section, f"too large for one NATS message ({exc.message})", item)
            return None

    async def each(self, section: str, subject: str, reply_type: type[T], queries: dict[str, Any]) -> list[T | None]:
        """:meth:`item` for each ``id -> query`` of ``queries`` (at most :data:`PARALLEL` at once), in order."""
        return await _all(*(self.item(section, i, subject, q, reply_type) for i, q in queries.items()))

    def mine(self, items: Iterable[T]) -> list[T]:
        return [i for i in items if getattr(i, "user_id", None) == self.user]

    async def run(self) -> dict[str, Any]:
        memory_query = MemoryEntriesQuery(
            user_id=self.user, history=True, limit=CAPS["memory_entries"], min_sequence=self.at
        )
        (threads, sessions), (runs, approvals), schedules, proposals, entries, (preferences, patterns) = await _all(
            self.threads_and_sessions(),
            self.agent_runs(),
            self.schedules(),
            self.proposals(),
            self.ask(subj.QUERY_MEMORY_ENTRIES, memory_query, MemoryEntriesReply),
            self.learned(),
        )
        memory = self.mine(entries.entries)
        if len(entries.entries) >= CAPS["memory_entries"]:
            projects = {e.project for e in memory} | {t.project for t in threads} | {r.project for r in runs}
            memory = await self.memory_by_project(memory, projects)
        memory.sort(key=lambda e: (e.project, -e.relevance, -e.recorded_at.timestamp()))
        earlier = await self.earlier_turns(sessions, {t.thread_id: t for t in threads})
        plain_sessions = [msgspec.to_builtins(s) | {"earlier_turns": earlier.get(s.session_id, [])} for s in sessions]
        sections = {
            "threads": threads,
            "sessions": plain_sessions,
            "preferences": self.mine(preferences.preferences),
            "patterns": self.mine(patterns.patterns),
            "memory_entries": memory,
            "agent_runs": runs,
            "approvals": approvals,
            "schedules": schedules,
            "skill_proposals": proposals,
        }
        head = {"user_id": self.user, "exported_at": utcnow().isoformat(), "format": FORMAT}
        return {**head, **msgspec.to_builtins(sections), "truncated": self.truncated}

    async def learned(self) -> tuple[PreferencesReply, PatternsReply]:
        """The user's preferences and patterns, as the learner holds them once it applied ``position``."""
        preferences, patterns = await _all(
            self.ask(
                subj.QUERY_PREFERENCES,
                PreferencesQuery(user_id=self.user, min_sequence=self.at),
                PreferencesReply,
                LEARNER,
            ),
            self.ask(
                subj.QUERY_PATTERNS, PatternsQuery(user_id=self.user, min_sequence=self.at), PatternsReply, LEARNER
            ),
        )
        return preferences, patterns

    async def threads_and_sessions(self) -> tuple[list[ThreadView], list[Any]]:
        """Every thread (ideas, workflows, chats, agent runs) and each as a session with its turns. The two lists
        are ordered differently (creation, last activity), so their union reaches past either cap."""
        cap = CAPS["threads"]
        ids, listed = await _all(
            self.ask(
                QUERY_THREADS,
                ThreadListQuery(limit=cap, user_id=self.user, ids_only=True, min_sequence=self.at),
                ThreadListReply,
            ),
            self.ask(
                subj.QUERY_SESSIONS, SessionsQuery(user_id=self.user, limit=cap, min_sequence=self.at), SessionsReply
            ),
        )
        union = list(dict.fromkeys([*ids.thread_ids, *(s.session_id for s in self.mine(listed.sessions))]))
        if len(ids.thread_ids) >= cap and len(listed.sessions) >= cap:
            reason = f"the orchestrator lists at most the {cap} newest threads (by creation and by activity)"
            self.cut("threads", reason)
            self.cut("sessions", reason)
        threads, sessions = await _all(
            self.each(
                "threads",
                subj.QUERY_THREAD,
                ThreadReply,
                {i: ThreadQuery(thread_id=i, min_sequence=self.at) for i in union},
            ),
            self.each(
                "sessions",
                subj.QUERY_SESSION,
                SessionReply,
                {i: SessionQuery(session_id=i, min_sequence=self.at) for i in union},
            ),
        )
        found_threads = self.mine(r.thread for r in threads if r is not None and r.found)
        found_sessions = self.mine(r.session for r in sessions if r is not None and r.found)
        found_threads.sort(key=lambda t: t.created_at, reverse=True)
        found_sessions.sort(key=lambda s: s.updated_at, reverse=True)
        return found_threads, found_sessions

    async def earlier_turns(self, sessions: list[Any], threads: dict[str, ThreadView]) -> dict[str, list[dict]]:
        """The turns a session's reply left out to fit one NATS message (``turns_omitted``), each ``{"job_id",
        "messages"}`` (the prompt as sent, then the reply), from the training export paged to its end. Their
        backend, tokens, cost and reply are the thread's jobs already."""
        wanted: dict[str, str] = {}  # job id -> session id
        for session in (s for s in sessions if s.turns_omitted):
            thread, kept = threads.get(session.session_id), {t.job_id for t in session.turns}
            if thread is None:
                self.cut("sessions", f"{session.turns_omitted} older turns left out", session.session_id)
                continue
            turns = [j.job_id for j in thread.jobs if j.kind in TURN_KINDS and j.job_id not in kept]
            wanted |= dict.fromkeys(turns, session.session_id)
        found: dict[str, list[dict[str, Any]]] = {}
        query = ExportQuery(format="sharegpt", user_id=self.user, limit=CAPS["export_page"], min_sequence=self.at)
        while wanted:
            page = await self.ask(subj.QUERY_EXPORT, query, ExportReply)
            for record in map(json.loads, page.lines):
                if record.get("id") in wanted:
                    said = record["conversations"]
                    found[record["id"]] = [
                        {"role": SPEAKERS.get(m["from"], m["from"]), "content": m["value"]} for m in said
                    ]
            if page.next_after is None:
                break
            query.after = page.next_after
        earlier: dict[str, list[dict]] = {}
        for job_id, messages in found.items():
            earlier.setdefault(wanted[job_id], []).append({"job_id": job_id, "messages": messages})
        for session_id in sorted(set(wanted.values())):
            missing = [j for j, s in wanted.items() if s == session_id and j not in found]
            if missing:
                self.cut("sessions", f"{len(missing)} older turns without a reply: no prompt exported", session_id)
        return earlier

    async def agent_runs(self) -> tuple[list[AgentRunView], list[Any]]:
        """Every agent run with its steps (model turns, tool calls and their outcomes) and approvals; the
        approvals also on their own (``approvals``), newest first."""
        cap, approvals_cap = CAPS["agent_runs"], CAPS["approvals"]
        listed, approvals = await _all(
            self.ask(
                subj.QUERY_AGENT_RUNS,
                AgentRunsQuery(user_id=self.user, limit=cap, min_sequence=self.at),
                AgentRunsReply,
            ),
            self.ask(
                subj.QUERY_APPROVALS,
                ApprovalsQuery(user_id=self.user, limit=approvals_cap, min_sequence=self.at),
                ApprovalsReply,
            ),
        )
        summaries = self.mine(listed.runs)
        if len(listed.runs) >= cap:
            self.cut("agent_runs", f"the orchestrator lists at most the {cap} newest agent runs")
        one = {r.run_id: AgentRunQuery(run_id=r.run_id, user_id=self.user, min_sequence=self.at) for r in summaries}
        full = await self.each("agent_runs", subj.QUERY_AGENT_RUN, AgentRunReply, one)
        runs = [r.run if r is not None and r.run is not None else s for s, r in zip(summaries, full, strict=True)]
        merged = {a.approval_id: a for a in self.mine(approvals.approvals)}
        merged |= {a.approval_id: a for run in runs for a in self.mine(run.approvals)}
        if len(approvals.approvals) >= approvals_cap and (len(listed.runs) >= cap or None in full):
            self.cut("approvals", "only the newest approvals and those of the exported runs")
        return runs, sorted(merged.values(), key=lambda a: a.requested_at, reverse=True)

    async def schedules(self) -> list[Any]:
        """Every schedule (deleted ones too) with its runs, newest first."""
        cap, runs_cap = CAPS["schedules"], CAPS["schedule_runs"]
        query = SchedulesQuery(user_id=self.user, include_deleted=True, limit=cap, min_sequence=self.at)
        listed = self.mine((await self.ask(subj.QUERY_SCHEDULES, query, SchedulesReply)).schedules)
        if len(listed) >= cap:
            self.cut("schedules", f"the orchestrator lists at most the {cap} newest schedules")
        one = {
            s.schedule_id: ScheduleQuery(
                schedule_id=s.schedule_id, user_id=self.user, runs_limit=runs_cap, min_sequence=self.at
            )
            for s in listed
        }
        full = await self.each("schedules", subj.QUERY_SCHEDULE, ScheduleReply, one)
        views = [
            r.schedule if r is not None and r.schedule is not None else s for s, r in zip(listed, full, strict=True)
        ]
        for view in views:
            if len(view.runs) >= runs_cap:
                self.cut("schedules", f"only the newest {runs_cap} runs of the schedule", view.schedule_id)
        return self.mine(views)

    async def proposals(self) -> list[sp.ProposalView]:
        """Every skill proposal the user made, with its files, diff, findings and test results, newest first."""
        cap = CAPS["skill_proposals"]

        async def listing(status: str | None) -> list[sp.ProposalView]:
            query = sp.ProposalsQuery(user_id=self.user, status=status, limit=cap, min_sequence=self.at)
            return (await self.ask(subj.QUERY_SKILL_PROPOSALS, query, sp.ProposalsReply)).proposals

        listed = await listing(None)
        if len(listed) >= cap:  # a partition by status reaches past the cap
            parts = await _all(*(listing(status) for status in sp.STATUSES))
            listed = list({p.proposal_id: p for part in [listed, *parts] for p in part}.values())
            if any(len(part) >= cap for part in parts):
                self.cut("skill_proposals", f"over {cap} proposals of one status: only the newest {cap} of it")
        one = {
            p.proposal_id: sp.ProposalsQuery(user_id=self.user, proposal_id=p.proposal_id, min_sequence=self.at)
            for p in listed
        }
        full = await self.each("skill_proposals", subj.QUERY_SKILL_PROPOSALS, sp.ProposalsReply, one)
        views = [r.proposals[0] if r is not None and r.proposals else p for p, r in zip(listed, full, strict=True)]
        return sorted(self.mine(views), key=lambda p: str(p.created_at or ""), reverse=True)

    async def memory_by_project(self, first: list[MemoryEntryView], projects: set[str]) -> list[MemoryEntryView]:
        """Past the cap of one listing: one listing per project the user's entries, threads and runs name."""
        cap = CAPS["memory_entries"]
        queries = [
            MemoryEntriesQuery(user_id=self.user, project=p, history=True, limit=cap, min_sequence=self.at)
            for p in sorted(projects)
        ]
        parts = await _all(*(self.ask(subj.QUERY_MEMORY_ENTRIES, q, MemoryEntriesReply) for q in queries))
        merged = {e.entry_id: e for e in first} | {e.entry_id: e for part in parts for e in self.mine(part.entries)}
        unlisted = {t["section"] for t in self.truncated if t["id"] is None} & {"threads", "agent_runs"}
        if unlisted or any(len(part.entries) >= cap for part in parts):
            self.cut("memory_entries", f"over {cap} entries in a project, or in a project not found")
        return list(merged.values())


async def _all(*calls: Awaitable[Any]) -> list[Any]:
    """``asyncio.gather`` that cancels the rest when one fails."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

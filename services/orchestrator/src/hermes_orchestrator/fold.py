"""The orchestrator's decision state in memory: every open thread's :class:`ThreadState` (folded with
:func:`hermes_orchestrator.state.evolve` from each batch the log follower fetches, before the rows are written), the
users' learned preferences and the editable settings. Decisions read only this, never SQLite.

It starts from the read model's snapshot at the stored position (:mod:`hermes_orchestrator.snapshot`) and folds the log
after it. An ended thread leaves memory once its final rows are stored; a decision that needs one (a rating) reads it
back from the read model.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hermes_proto import events as ev
from hermes_proto import facts, threads
from hermes_proto import project_memory as pm
from hermes_proto.base import Event
from hermes_proto.forgetting import PersonalDataForgotten, forgotten_aggregates
from hermes_proto.partitions import SINGLE, Partition
from hermes_proto.queries import QueueReply

from hermes_orchestrator import snapshot
from hermes_orchestrator.proposals import ProposalState, evolve_proposal
from hermes_orchestrator.schedule_state import ScheduleState, evolve_schedule
from hermes_orchestrator.state import KnownPreference, ThreadState, evolve
from hermes_orchestrator.tables import ThreadRow


class ThreadFold:
    """``states``: open threads of ``partition`` (and ended ones whose rows are not stored yet) by id; ``closed``: ids
    of its ended threads whose final rows are stored. ``settings``: the users' editable settings (key → value, as ``SettingChanged`` left
    them), ``settings_version`` bumped by each change. Not thread-safe: used on the event loop only."""

    def __init__(self, engine: Engine, start: snapshot.Snapshot, partition: Partition = SINGLE) -> None:
        self.engine = engine
        self.partition = partition
        self.states: dict[str, ThreadState] = {t: s for t, s in start.open.items() if partition.owns(t)}
        self.closed: set[str] = {t for t in start.closed if partition.owns(t)}
        self._closing: deque[tuple[int, str]] = deque()
        self.settings: dict[str, str] = dict(start.settings)
        self.settings_version = 0
        self._preferences: dict[str, dict[str, KnownPreference]] = {}
        for pref in start.preferences:
            self._preferences.setdefault(pref.user_id, {})[pref.preference_id] = pref
        self._preference_users = {p.preference_id: p.user_id for p in start.preferences}
        self.schedules: dict[str, ScheduleState] = dict(start.schedules) if partition.index == 0 else {}
        """Every schedule not deleted (partition 0 owns them all: their commands carry no thread)."""
        self.memory: dict[str, pm.EntryState] = dict(start.memory)
        """Every project memory entry (history and deletions included) by id: what prompts and the historian read."""
        self.proposals: dict[str, ProposalState] = dict(start.proposals) if partition.index == 0 else {}
        """Skill proposals by id (partition 0's: their commands carry no thread)."""
        self.schedule_runs: dict[str, str] = {r: s.schedule_id for s in self.schedules.values() for r in s.running}
        """Run (thread) id → schedule id of every scheduled run still going."""

    @classmethod
    def load(cls, engine: Engine, partition: Partition = SINGLE) -> ThreadFold:
        """The fold of ``partition``'s threads at the read model's stored position (blocking: a few queries)."""
        with Session(engine) as session:
            start = snapshot.load(session)
            open_ = select(ThreadRow.thread_id, ThreadRow.user_id).where(
                col(ThreadRow.status).not_in(threads.FINAL_STATUSES)
            )
            for thread_id, user_id in session.exec(open_):
                if thread_id in start.open:
                    start.open[thread_id].user_id = user_id
            return cls(engine, start, partition)

    # ---- folding -----------------------------------------------------------------------------------------------

    def apply(self, decoded: list[tuple[int, Event]], last: int) -> None:
        """Fold one batch ((sequence, event) in stream order; ``last``: the batch's last sequence)."""
        for seq, event in decoded:
            if event.aggregate_type == "thread":
                self._thread_event(seq, event)
            elif isinstance(event, ev.SettingChanged):
                if event.value is None:
                    self.settings.pop(event.key, None)
                else:
                    self.settings[event.key] = event.value
                self.settings_version += 1
            elif isinstance(event, ev.PreferenceLearned | ev.PreferenceForgotten):
                self._preference_event(event)
            elif event.aggregate_type == "skill_proposal" and self.partition.index == 0:
                state = evolve_proposal(self.proposals.get(event.aggregate_id), event)
                if state is not None:
                    self.proposals[event.aggregate_id] = state
            elif event.aggregate_type == "memory_entry":
                pm.evolve(self.memory, event)
            elif event.aggregate_type == "schedule" and self.partition.index == 0:
                self._schedule_event(event)
            elif isinstance(event, PersonalDataForgotten):
                self.forget(event)

    def _thread_event(self, seq: int, event: Event) -> None:
        thread_id = event.aggregate_id
        state = self.states.get(thread_id)
        if state is None:
            if thread_id in self.closed or not isinstance(event, ev.ThreadOpened) or not self.partition.owns(thread_id):
                return
            state = evolve(None, event)
            if state is not None:
                self.states[thread_id] = state
            return
        was_open = threads.is_open(state.status)
        evolve(state, event)
        if was_open and threads.is_final(state.status):
            self._closing.append((seq, thread_id))

    def _preference_event(self, event: ev.PreferenceLearned | ev.PreferenceForgotten) -> None:
        pref_id = event.aggregate_id
        if isinstance(event, ev.PreferenceForgotten):
            user = self._preference_users.pop(pref_id, None)
            if user is not None:
                self._preferences.get(user, {}).pop(pref_id, None)
            return
        known = self._preferences.setdefault(event.user_id, {}).get(pref_id)
        if known is None:
            known = KnownPreference(
                pref_id, event.user_id, event.category, event.key, event.value, event.confidence, scope=event.scope
            )
            self._preferences[event.user_id][pref_id] = known
            self._preference_users[pref_id] = event.user_id
        known.value, known.confidence, known.expires_at = event.value, event.confidence, event.expires_at
        known.wording = event.wording()

    def _schedule_event(self, event: Event) -> None:
        before = self.schedules.get(event.aggregate_id)
        running = set(before.running) if before is not None else set()
        state = evolve_schedule(before, event)
        if state is None:
            return
        for run_id in running - set(state.running):
            self.schedule_runs.pop(run_id, None)
        for run_id in set(state.running) - running:
            self.schedule_runs[run_id] = state.schedule_id
        if state.status == "deleted" and not state.running:
            self.schedules.pop(state.schedule_id, None)
        else:
            self.schedules[state.schedule_id] = state

    def forget(self, event: PersonalDataForgotten) -> None:
        """Drop what ``event`` forgets: the threads, schedules (with their runs' threads), memory entries, skill
        proposals and preferences it names and, when ``event.user_id`` is set, every one of that user's."""
        named = forgotten_aggregates(event)
        user = event.user_id
        schedules = _doomed(self.schedules, named.get("schedule", set()), user)
        runs = {run for run, schedule_id in self.schedule_runs.items() if schedule_id in schedules}
        gone = _doomed(self.states, named.get("thread", set()) | runs, user, _thread_owner)
        for thread_id in gone:
            self.states.pop(thread_id, None)
            self.closed.discard(thread_id)
        self._closing = deque(item for item in self._closing if item[1] not in gone)
        self.schedule_runs = {r: s for r, s in self.schedule_runs.items() if r not in gone and s not in schedules}
        for schedule_id in schedules:
            self.schedules.pop(schedule_id, None)
        for states, kind in ((self.memory, "memory_entry"), (self.proposals, "skill_proposal")):
            for aggregate_id in _doomed(states, named.get(kind, set()), user):
                states.pop(aggregate_id, None)
        for pref_id in named.get("preference", set()):
            owner = self._preference_users.pop(pref_id, None)
            if owner is not None:
                self._preferences.get(owner, {}).pop(pref_id, None)
        for pref_id in self._preferences.pop(user, {}) if user else ():
            self._preference_users.pop(pref_id, None)

    def stored(self, position: int) -> None:
        """The rows hold everything up to ``position``: ended threads closed by then leave memory."""
        while self._closing and self._closing[0][0] <= position:
            _, thread_id = self._closing.popleft()
            state = self.states.get(thread_id)
            if state is not None and threads.is_final(state.status):
                del self.states[thread_id]
                self.closed.add(thread_id)

    # ---- reading -----------------------------------------------------------------------------------------------

    async def state(self, thread_id: str) -> ThreadState | None:
        """The decision state of ``thread_id`` (None: unknown). An ended thread no longer in memory is read back
        from the read model (its rows hold its final state)."""
        state = self.states.get(thread_id)
        if state is not None or thread_id not in self.closed:
            return state
        return await asyncio.to_thread(self._load, thread_id)

    def _load(self, thread_id: str) -> ThreadState | None:
        with Session(self.engine) as session:
            return snapshot.load_state(session, thread_id)

    def usable_preferences(
        self, user_id: str, threshold: float, now: datetime, within: Sequence[str] = (facts.EVERYWHERE,)
    ) -> list[ev.Assumption]:
        """The facts a draft-1 prompt of ``user_id`` applies in the scopes ``within`` (most specific first,
        :func:`hermes_proto.facts.scopes`): per slot the most specific one with ``confidence >= threshold``, unexpired
        at ``now`` and not contradicted by a more specific one (:func:`hermes_proto.facts.resolve`), leaving out
        slots known as unanswered; ordered by category and key."""
        live = [p for p in self._preferences.get(user_id, {}).values() if p.expires_at is None or p.expires_at > now]
        chosen = facts.resolve(
            live,
            within,
            slot=lambda p: facts.slot_of(p.category, p.key),
            scope=lambda p: p.scope,
            value=lambda p: p.value,
            usable=lambda p: p.confidence >= threshold,
        )
        held = sorted(chosen.values(), key=lambda p: (p.category, p.key))
        return [p.assumption() for p in held if facts.applies(p.value)]

    def open_jobs(self) -> Iterator[tuple[ThreadState, str, str, int]]:
        """``(thread, job_id, status, priority)`` of every job that has not ended, in open threads."""
        for state in self.states.values():
            for job in state.jobs.values():
                if threads.cancellable(job.status):
                    yield state, job.job_id, job.status, job.priority

    def queue_depth(self) -> QueueReply:
        """The open jobs by status and priority, and the workflow steps waiting for their dependencies."""
        jobs = [(status, priority) for _, _, status, priority in self.open_jobs()]
        waiting = sum(
            1
            for state in self.states.values()
            if threads.is_open(state.status)
            for step in state.steps.values()
            if step.status == "waiting"
        )
        return QueueReply(
            open_jobs=len(jobs),
            by_status=dict(Counter(status for status, _ in jobs)),
            by_priority={str(p): n for p, n in sorted(Counter(p for _, p in jobs).items())},
            waiting_steps=waiting,
        )

    def job_open(self, thread_id: str, job_id: str) -> bool:
        state = self.states.get(thread_id)
        job = state.jobs.get(job_id) if state is not None else None
        return job is not None and threads.cancellable(job.status)


def _user(state: Any) -> str:
    return state.user_id


def _thread_owner(state: ThreadState) -> str:
    return state.user_id or (state.run.user_id if state.run is not None else "")


def _doomed(states: dict[str, Any], ids: set[str], user: str, owner: Callable[[Any], str] = _user) -> set[str]:
    """``ids`` and the keys of ``states`` whose owner is ``user`` (none when ``user`` is "")."""
    return ids | ({k for k, st in states.items() if owner(st) == user} if user else set())

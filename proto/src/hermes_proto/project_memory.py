"""Project memory: what ended sessions taught, kept per user and project as **entries** (aggregate ``memory_entry``,
subjects ``hermes.evt.memory_entry.<entry_id>.<type>``) that later prompts of that project start from.

A historian job (:class:`ConsolidateMemory`) reads the turns of ended sessions, extracts candidates
(:func:`candidates`, :mod:`hermes_proto.memory_extract`) and :func:`consolidate` s them against the entries it has:
a near-duplicate is merged, a contradiction supersedes (the newer statement wins, the older stays as history),
anything else is recorded. Entry ids derive from (user, project, kind, key, source session), so running the
historian again on the same sessions appends nothing. :func:`evolve` folds the events into :class:`EntryState`
s; :func:`select_for_prompt` picks what a prompt gets; :func:`decide_edit`/:func:`decide_delete` answer a person's
commands. Entries are free text the user said ("I prefer tabs over spaces"), not learned facts
(:mod:`hermes_proto.facts`, the answers to question slots). Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from hermes_proto.base import Command, Event
from hermes_proto.costs import estimate_tokens
from hermes_proto.ids import derived_id
from hermes_proto.memory_extract import (
    DUPLICATE_SIMILARITY,
    MAX_KEY,
    MAX_TEXT,
    Candidate,
    MemoryKind,
    similarity,
    words,
)
from hermes_proto.memory_extract import Turn as Turn  # re-exported: the historian's whole API is here
from hermes_proto.memory_extract import candidates as candidates
from hermes_proto.text import normalize_text

MERGE_BOOST = 0.1
"""A merge raises an entry's relevance to ``min(1, max(entry's, candidate's) + 0.1)``."""
ENTRY_OVERHEAD_TOKENS = 4
"""Tokens an entry costs in a prompt beyond its text (a list marker and its kind), on top of
:func:`hermes_proto.costs.estimate_tokens` (~4 characters per token)."""

MemoryText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT)]
MemoryKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY)]
Relevance = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
EntryId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
ProjectName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class MemoryEntryEvent(Event, frozen=True, kw_only=True):
    """Base of the events of one memory entry: ``aggregate_id`` = ``entry_id`` (:func:`entry_id_for`)."""

    aggregate_type: ClassVar[str] = "memory_entry"

    entry_id: str


class MemoryEntryRecorded(MemoryEntryEvent, frozen=True, kw_only=True):
    """A new entry of ``user_id`` in ``project``: ``kind`` (decision, pattern, correction, preference), ``text`` (1-2000
    characters), ``key`` its subject (:func:`hermes_proto.memory_extract.subject_key`), ``source_session`` the
    session/thread it came from, ``relevance`` in [0, 1], ``expires_at`` (UTC; None: never), ``supersedes`` the entry
    it replaced (a contradiction), ``stated_at`` when the user said it (None: ``occurred_at``)."""

    user_id: str
    project: str
    kind: MemoryKind
    text: MemoryText
    key: MemoryKey
    source_session: str
    relevance: Relevance
    expires_at: datetime | None = None
    supersedes: str | None = None
    stated_at: datetime | None = None


class MemoryEntryMerged(MemoryEntryEvent, frozen=True, kw_only=True):
    """``source_session`` said the entry again (``duplicate``, its words); ``relevance`` the entry's new one."""

    duplicate: MemoryText
    source_session: str
    relevance: Relevance


class MemoryEntrySuperseded(MemoryEntryEvent, frozen=True, kw_only=True):
    """A newer entry ``by_entry_id`` on the same subject contradicts this one: kept as history, no longer applied."""

    by_entry_id: str


class MemoryEntryEdited(MemoryEntryEvent, frozen=True, kw_only=True):
    """``user_id`` (the owner) replaced the entry's ``text``, ``kind`` and ``expires_at`` (its key stays)."""

    text: MemoryText
    kind: MemoryKind
    expires_at: datetime | None = None
    user_id: str


class MemoryEntryDeleted(MemoryEntryEvent, frozen=True, kw_only=True):
    """``user_id`` (the owner) deleted the entry: never applied again, and never recorded again from the same
    session (its id stays known)."""

    user_id: str


MEMORY_EVENTS: tuple[type[Event], ...] = (
    MemoryEntryRecorded,
    MemoryEntryMerged,
    MemoryEntrySuperseded,
    MemoryEntryEdited,
    MemoryEntryDeleted,
)


class EditMemoryEntry(Command, frozen=True, kw_only=True):
    """Replace entry ``entry_id``'s ``text`` (1-2000 characters), ``kind`` and ``expires_at`` (None: never expires).
    ``user_id``: who asks (set by the surface from its authentication); only the owner's edit applies."""

    entry_id: EntryId
    text: MemoryText
    kind: MemoryKind
    expires_at: datetime | None = None
    user_id: UserId = "local"


class DeleteMemoryEntry(Command, frozen=True, kw_only=True):
    """Delete entry ``entry_id``; only the owner's (``user_id``) delete applies."""

    entry_id: EntryId
    user_id: UserId = "local"


class ConsolidateMemory(Command, frozen=True, kw_only=True):
    """Run the historian now for ``user_id``'s ended sessions of ``project`` (None: every project)."""

    project: ProjectName | None = None
    user_id: UserId = "local"


MEMORY_COMMANDS: tuple[type[Command], ...] = (EditMemoryEntry, DeleteMemoryEntry, ConsolidateMemory)


class EntryState(msgspec.Struct, frozen=True, kw_only=True):
    """One entry as its events left it (:func:`evolve`). ``recorded_at``: when it was recorded; ``stated_at``: when
    the user said it; ``sessions``: the sessions that said it (the source, then each merge); ``superseded_by``,
    ``deleted``: history and tombstones stay in the fold so the historian never records them again."""

    entry_id: str
    user_id: str
    project: str
    kind: MemoryKind
    key: str
    text: str
    relevance: float
    recorded_at: datetime
    stated_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None
    superseded_by: str | None = None
    supersedes: str | None = None
    sessions: tuple[str, ...] = ()
    deleted: bool = False

    def live(self, now: datetime) -> bool:
        """Applied at ``now``: not deleted, not superseded, not expired (``expires_at`` at or before ``now``)."""
        return not self.deleted and self.superseded_by is None and (self.expires_at is None or self.expires_at > now)


def _envelope(entry_id: str, now: datetime, corr: str, cause: str | None, *id_parts: str) -> dict[str, Any]:
    """The envelope fields of an event of entry ``entry_id``, its id derived from ``id_parts``."""
    ids = {"event_id": derived_id(*id_parts), "aggregate_id": entry_id, "entry_id": entry_id}
    return ids | {"occurred_at": now, "correlation_id": corr, "causation_id": cause}


def _answer(command: Command, entry_id: str, now: datetime) -> dict[str, Any]:
    """The envelope of the event answering ``command`` about ``entry_id``."""
    corr = command.correlation_id or command.command_id
    return _envelope(entry_id, now, corr, command.command_id, command.command_id, command.type_name())


def entry_id_for(user_id: str, project: str, kind: str, key: str, source_session: str) -> str:
    """The stable entry id (32 hex characters, one subject token) of what ``source_session`` said on ``key``."""
    return derived_id("memory_entry", user_id, project, kind, key, source_session)


def evolve(state_by_id: dict[str, EntryState], event: Event) -> dict[str, EntryState]:
    """Apply one event to the entries by id, **in place**, and return the dict. Events of other aggregates, of
    unknown entries and a second :class:`MemoryEntryRecorded` of a known id change nothing."""
    if not isinstance(event, MemoryEntryEvent):
        return state_by_id
    entry, at = state_by_id.get(event.entry_id), event.occurred_at
    if isinstance(event, MemoryEntryRecorded):
        if entry is None:
            state_by_id[event.entry_id] = EntryState(
                entry_id=event.entry_id,
                user_id=event.user_id,
                project=event.project,
                kind=event.kind,
                key=event.key,
                text=event.text,
                relevance=event.relevance,
                recorded_at=at,
                stated_at=event.stated_at or at,
                updated_at=at,
                expires_at=event.expires_at,
                supersedes=event.supersedes,
                sessions=(event.source_session,),
            )
        return state_by_id
    if entry is None:
        return state_by_id
    change: dict[str, Any] = {"updated_at": at}
    if isinstance(event, MemoryEntryMerged):
        sessions = entry.sessions + (() if event.source_session in entry.sessions else (event.source_session,))
        change |= {"relevance": event.relevance, "sessions": sessions}
    elif isinstance(event, MemoryEntrySuperseded):
        change["superseded_by"] = event.by_entry_id
    elif isinstance(event, MemoryEntryEdited):
        change |= {"text": event.text, "kind": event.kind, "expires_at": event.expires_at}
    elif isinstance(event, MemoryEntryDeleted):
        change["deleted"] = True
    state_by_id[event.entry_id] = msgspec.structs.replace(entry, **change)
    return state_by_id


def _alike(e: EntryState, kind: str, key: str, text: str) -> float | None:
    """How alike entry ``e`` and a statement are (token Jaccard) when they are near-duplicates, else None."""
    sim = similarity(e.text, text)
    return sim if sim >= DUPLICATE_SIMILARITY or (e.kind, e.key, words(e.text)) == (kind, key, words(text)) else None


def _decide(state: dict[str, EntryState], c: Candidate, now: datetime, corr: str, cause: str | None) -> list[Event]:
    """The events one candidate adds to ``state`` (see :func:`consolidate`), caused by ``cause``."""
    text, key = normalize_text(c.text)[:MAX_TEXT], c.key[:MAX_KEY]
    new_id = entry_id_for(c.user_id, c.project, c.kind, key, c.source_session)
    mine = [e for e in state.values() if e.user_id == c.user_id and e.project == c.project]
    seen = any(
        c.source_session in e.sessions and (e.key == key or _alike(e, c.kind, key, text) is not None) for e in mine
    )
    if not text or not key or new_id in state or seen:
        return []
    live = [e for e in mine if e.live(now)]
    dups = [
        (e.kind == c.kind and e.key == key, sim, e.stated_at, e.entry_id, e)
        for e in live
        if (sim := _alike(e, c.kind, key, text)) is not None
    ]
    if dups:
        dup = max(dups, key=lambda d: d[:4])[4]
        raised = round(min(1.0, max(dup.relevance, c.relevance) + MERGE_BOOST), 4)
        return [
            MemoryEntryMerged(
                **_envelope(dup.entry_id, now, corr, cause, dup.entry_id, "memory_entry_merged", c.source_session),
                duplicate=text,
                source_session=c.source_session,
                relevance=raised,
            )
        ]
    same = sorted((e for e in live if e.kind == c.kind and e.key == key), key=lambda e: (e.stated_at, e.entry_id))
    newer = not same or c.at >= same[-1].stated_at
    events: list[Event] = [
        MemoryEntryRecorded(
            **_envelope(new_id, now, corr, cause, new_id, "memory_entry_recorded"),
            user_id=c.user_id,
            project=c.project,
            kind=c.kind,
            text=text,
            key=key,
            source_session=c.source_session,
            relevance=round(min(1.0, max(0.0, c.relevance)), 4),
            expires_at=c.expires_at,
            supersedes=same[-1].entry_id if same and newer else None,
            stated_at=c.at,
        )
    ]
    pairs = [(old.entry_id, new_id) for old in same] if newer else [(new_id, same[-1].entry_id)]
    for old, by in pairs:
        events.append(
            MemoryEntrySuperseded(
                **_envelope(old, now, corr, cause, old, "memory_entry_superseded", by),
                by_entry_id=by,
            )
        )
    return events


def consolidate(
    existing: Iterable[EntryState],
    candidates: Sequence[Candidate],
    now: datetime,
    *,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> list[Event]:
    """The events that fold ``candidates`` into the ``existing`` entries (all of them: live, superseded, expired,
    deleted), taken in (at, session, kind, key) order, each against the entries the earlier ones left:

    * its id (:func:`entry_id_for`) is known, or an entry (any state) already holds its session and has its key or
      is a near-duplicate: nothing, it was consolidated before (idempotence);
    * a live entry of the same user and project is a near-duplicate (:func:`~hermes_proto.memory_extract.similarity`
      ≥ 0.8, or same kind, key and words): :class:`MemoryEntryMerged` into the most alike (same kind and key first),
      relevance raised by :data:`MERGE_BOOST` (capped at 1);
    * a live entry has the same kind and key: a contradiction. The newer statement wins: the candidate is recorded
      with ``supersedes`` = the newest such entry, and each is :class:`MemoryEntrySuperseded` by it; a candidate said
      before that entry is recorded and superseded by it at once (history);
    * otherwise :class:`MemoryEntryRecorded`.

    Expired, superseded and deleted entries are not live. Event ids derive from the entry ids; ``occurred_at`` is
    ``now``; ``correlation_id`` defaults to one derived from ``now``."""
    state = {e.entry_id: e for e in existing}
    corr = correlation_id or derived_id("memory_consolidation", now.isoformat())
    out: list[Event] = []
    for c in sorted(candidates, key=lambda c: (c.at, c.source_session, c.kind, c.key)):
        for event in _decide(state, c, now, corr, causation_id):
            out.append(event)
            evolve(state, event)
    return out


def select_for_prompt(
    entries: Iterable[EntryState], project: str, user_id: str, budget_tokens: int, now: datetime
) -> list[EntryState]:
    """``user_id``'s live entries of ``project`` (:meth:`EntryState.live` at ``now``), by relevance (highest first),
    then newest recorded, then said; each costs ``estimate_tokens(text) + 4`` (:data:`ENTRY_OVERHEAD_TOKENS`) and an
    entry that does not fit the ``budget_tokens`` left is skipped (a smaller one after it may fit)."""
    mine = [e for e in entries if e.user_id == user_id and e.project == project and e.live(now)]
    mine.sort(key=lambda e: (-e.relevance, -e.recorded_at.timestamp(), -e.stated_at.timestamp(), e.entry_id))
    chosen, left = [], budget_tokens
    for entry in mine:
        cost = estimate_tokens(entry.text) + ENTRY_OVERHEAD_TOKENS
        if cost <= left:
            chosen.append(entry)
            left -= cost
    return chosen


def _owned(state_by_id: dict[str, EntryState], entry_id: str, user_id: str) -> EntryState | None:
    entry = state_by_id.get(entry_id)
    return entry if entry is not None and not entry.deleted and entry.user_id == user_id else None


def decide_edit(state_by_id: dict[str, EntryState], command: EditMemoryEntry, now: datetime) -> list[Event]:
    """:class:`MemoryEntryEdited` for an owner's edit that changes something; ``[]`` for an unknown, deleted or
    someone else's entry, or text that normalises to nothing or to what it is."""
    entry, text = _owned(state_by_id, command.entry_id, command.user_id), normalize_text(command.text)[:MAX_TEXT]
    new = (text, command.kind, command.expires_at)
    if entry is None or not text or new == (entry.text, entry.kind, entry.expires_at):
        return []
    fields = {"text": text, "kind": command.kind, "expires_at": command.expires_at, "user_id": command.user_id}
    return [MemoryEntryEdited(**_answer(command, entry.entry_id, now), **fields)]


def decide_delete(state_by_id: dict[str, EntryState], command: DeleteMemoryEntry, now: datetime) -> list[Event]:
    """:class:`MemoryEntryDeleted` for the owner's entry; ``[]`` for an unknown, deleted or someone else's entry."""
    entry = _owned(state_by_id, command.entry_id, command.user_id)
    return (
        [] if entry is None else [MemoryEntryDeleted(**_answer(command, entry.entry_id, now), user_id=command.user_id)]
    )

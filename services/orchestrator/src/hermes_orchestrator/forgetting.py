"""Forgetting and retention (partition 0): destroy data keys and say so in the log (:mod:`hermes_proto.forgetting`).

``ForgetUser``: every key the bucket lists with the user as owner, plus the keys of the threads, schedules,
memory entries and skill proposals the fold knows as the user's (a key created by an event without ``user_id``
has no owner), plus those its earlier events named (a redelivery after a crash). :class:`PersonalDataForgotten`
events of at most :data:`CHUNK` keys are appended first (ids derived from the command's, so a redelivery appends
nothing new), then each one's keys are erased and an erase notice tells every process; read models delete the named
aggregates' rows when they apply it. Retention: every ``interval_s`` the same for keys older than their type's limit,
sparing open threads and live schedules.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import Counter

from hermes_proto import subjects
from hermes_proto.base import Event
from hermes_proto.codec import DecodeError, decode_event
from hermes_proto.forgetting import (
    FORGET_REASON_REQUEST,
    ForgetUser,
    PersonalDataForgotten,
    RetentionPolicy,
    forgotten_event_id,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.keyring import Keyring, announce_erased, key_id_of
from hermes_proto.telemetry import bind_ids

from hermes_orchestrator.fold import ThreadFold

log = structlog.get_logger("hermes.orchestrator.forgetting")

KEYS_DESTROYED = Counter("hermes_keys_destroyed_total", "Data keys destroyed", ["reason"])
FORGET_REQUESTS = Counter("hermes_forget_requests_total", "ForgetUser commands handled")


def user_aggregates(fold: ThreadFold, user_id: str) -> list[str]:
    """The key ids of the aggregates the fold knows as ``user_id``'s (open threads, schedules, memory entries,
    skill proposals): their keys are destroyed even when created without an owner."""
    groups = (("thread", fold.states), ("schedule", fold.schedules), ("memory_entry", fold.memory))
    keys = [key_id_of(kind, aid) for kind, states in groups for aid, st in states.items() if st.user_id == user_id]
    keys += [key_id_of("skill_proposal", pid) for pid, st in fold.proposals.items() if st.user_id == user_id]
    return keys


CHUNK = 2000
"""Key ids per ``PersonalDataForgotten`` (about 42 bytes each: well under NATS's 1 MiB payload)."""


def chunks(key_ids: list[str]) -> list[list[str]]:
    return [key_ids[i : i + CHUNK] for i in range(0, len(key_ids), CHUNK)] or [[]]


class Forgetting:
    """Destroys data keys; ``append`` is the decisions' append (waits for the fold)."""

    def __init__(
        self,
        js: JetStreamContext,
        keyring: Keyring,
        fold: ThreadFold,
        append: Callable[[list[Event]], Awaitable[None]],
        retention: RetentionPolicy,
        interval_s: float,
    ) -> None:
        self.js, self.keyring, self.fold, self.append = js, keyring, fold, append
        self.retention, self.interval_s = retention, interval_s

    async def _recorded(self, aggregate_id: str, causation_id: str) -> list[str]:
        """The key ids already named by this command's events (a redelivery after a crash: the fold has dropped
        what they named, the bucket may still hold it)."""
        subject, seq, named = f"hermes.evt.privacy.{aggregate_id}.personal_data_forgotten", 1, []
        while True:
            try:
                raw = await self.js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject=subject, next=True)
            except NotFoundError:
                return named
            seq = (raw.seq or seq) + 1
            try:
                event = decode_event(raw.data or b"")
            except DecodeError:
                continue
            if isinstance(event, PersonalDataForgotten) and event.causation_id == causation_id:
                named += event.key_ids

    async def _destroy(self, events: list[PersonalDataForgotten], reason: str) -> int:
        """Append each event, erase its keys, tell every process; returns how many keys had bytes overwritten."""
        total = 0
        for event in events:
            await self.append([event])
            erased = await self.keyring.erase(self.js, event.key_ids)
            await announce_erased(self.js._nc, event.key_ids, int(event.occurred_at.timestamp() * 1000))
            KEYS_DESTROYED.labels(reason).inc(len(erased))
            total += len(erased)
        return total

    async def on_command(self, cmd: ForgetUser) -> None:
        """Forget ``cmd.user_id`` (module docstring). Raises the bucket's errors (the command is redelivered)."""
        bind_ids(correlation_id=cmd.correlation_id)
        aggregate_id = derived_id("privacy", cmd.user_id)
        owned = {key_id for key_id, entry, _ in await self.keyring.entries() if entry.owner == cmd.user_id}
        owned.update(user_aggregates(self.fold, cmd.user_id))
        owned.update(await self._recorded(aggregate_id, cmd.command_id))
        now = utcnow()
        events = [
            PersonalDataForgotten(
                event_id=forgotten_event_id(cmd.user_id, cmd.command_id if i == 0 else f"{cmd.command_id}:{i}"),
                aggregate_id=aggregate_id,
                occurred_at=now,
                correlation_id=cmd.correlation_id or cmd.command_id,
                causation_id=cmd.command_id,
                user_id=cmd.user_id,
                key_ids=part,
                reason=FORGET_REASON_REQUEST,
            )
            for i, part in enumerate(chunks(sorted(owned)))
        ]
        erased = await self._destroy(events, FORGET_REASON_REQUEST)
        FORGET_REQUESTS.inc()
        log.info("user_forgotten", user_id=cmd.user_id, keys=len(owned), erased=erased, by=cmd.requested_by)

    def _open_aggregates(self) -> set[str]:
        """Key ids of what is still going: open threads and live schedules (retention counts from a key's
        creation, so a schedule or chat in use is kept until it ends)."""
        return {key_id_of("thread", t) for t in self.fold.states} | {
            key_id_of("schedule", s) for s in self.fold.schedules
        }

    async def sweep(self, now_ms: int | None = None) -> int:
        """Destroy the keys past their retention limit (not those of open threads or live schedules); events of at
        most :data:`CHUNK` keys per aggregate type. Returns how many keys were erased."""
        if not self.retention.days:
            return 0
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        keep = self._open_aggregates() if self.fold is not None else set()
        expired: dict[str, list[str]] = {}
        for key_id, entry, _ in await self.keyring.entries():
            if key_id not in keep and self.retention.expired(key_id, entry.created_ms, now_ms):
                expired.setdefault(key_id.partition(".")[0], []).append(key_id)
        total = 0
        for kind, key_ids in sorted(expired.items()):
            reason = f"retention:{kind}"
            events = [
                PersonalDataForgotten(
                    event_id=derived_id("retention", kind, *part),
                    aggregate_id=derived_id("privacy", "retention", kind),
                    occurred_at=utcnow(),
                    correlation_id=derived_id("retention", str(now_ms)),
                    key_ids=part,
                    reason=reason,
                )
                for part in chunks(sorted(key_ids))
            ]
            erased = await self._destroy(events, reason)
            total += erased
            log.info("retention_applied", kind=kind, keys=erased)
        return total

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``interval_s`` until ``stop``; an error is logged and the next sweep tries again."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:
                log.exception("retention_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                pass

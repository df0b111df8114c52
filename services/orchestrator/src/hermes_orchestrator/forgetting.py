"""Forgetting and retention (partition 0): destroy data keys and say so in the log (:mod:`hermes_proto.forgetting`).

``ForgetUser``: every key the bucket lists with the user as owner, plus the keys of the threads, schedules,
memory entries and skill proposals the fold knows as the user's (a key created by an event without ``user_id``
has no owner). The :class:`PersonalDataForgotten` event is appended first (its id derives from the command's, so a
redelivered command appends nothing new), then the keys are erased; read models delete the named aggregates' rows
when they apply it. Retention: every ``interval_s`` the same for keys older than their type's limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog
from nats.js import JetStreamContext
from prometheus_client import Counter

from hermes_proto.base import Event
from hermes_proto.forgetting import (
    FORGET_REASON_REQUEST,
    ForgetUser,
    PersonalDataForgotten,
    RetentionPolicy,
    forgotten_event_id,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.keyring import Keyring, key_id_of
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

    async def on_command(self, cmd: ForgetUser) -> None:
        """Forget ``cmd.user_id`` (module docstring). Raises the bucket's errors (the command is redelivered)."""
        bind_ids(correlation_id=cmd.correlation_id)
        owned = {key_id for key_id, entry, _ in await self.keyring.entries() if entry.owner == cmd.user_id}
        owned.update(user_aggregates(self.fold, cmd.user_id))
        key_ids = sorted(owned)
        event = PersonalDataForgotten(
            event_id=forgotten_event_id(cmd.user_id, cmd.command_id),
            aggregate_id=derived_id("privacy", cmd.user_id),
            occurred_at=utcnow(),
            correlation_id=cmd.correlation_id or cmd.command_id,
            causation_id=cmd.command_id,
            user_id=cmd.user_id,
            key_ids=key_ids,
            reason=FORGET_REASON_REQUEST,
        )
        await self.append([event])
        erased = await self.keyring.erase(self.js, key_ids)
        FORGET_REQUESTS.inc()
        KEYS_DESTROYED.labels(FORGET_REASON_REQUEST).inc(len(erased))
        log.info("user_forgotten", user_id=cmd.user_id, keys=len(key_ids), erased=len(erased), by=cmd.requested_by)

    async def sweep(self, now_ms: int | None = None) -> int:
        """Destroy the keys past their retention limit; one event per aggregate type. Returns how many."""
        if not self.retention.days:
            return 0
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        expired: dict[str, list[str]] = {}
        for key_id, entry, _ in await self.keyring.entries():
            if self.retention.expired(key_id, entry.created_ms, now_ms):
                expired.setdefault(key_id.partition(".")[0], []).append(key_id)
        total = 0
        for kind, key_ids in sorted(expired.items()):
            reason = f"retention:{kind}"
            key_ids.sort()
            await self.append(
                [
                    PersonalDataForgotten(
                        event_id=derived_id("retention", kind, *key_ids),
                        aggregate_id=derived_id("privacy", "retention", kind),
                        occurred_at=utcnow(),
                        correlation_id=derived_id("retention", str(now_ms)),
                        key_ids=key_ids,
                        reason=reason,
                    )
                ]
            )
            erased = await self.keyring.erase(self.js, key_ids)
            KEYS_DESTROYED.labels(reason).inc(len(erased))
            total += len(erased)
            log.info("retention_applied", kind=kind, keys=len(erased))
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

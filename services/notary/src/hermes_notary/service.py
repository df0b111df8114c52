"""The notary: reads every event into the Merkle tree, appends signed checkpoints, attests SOUL.md changes and hands
the identity over to a successor key.

Only the notary reads the instance key. It signs only with the key the log is already signed with (or any key for
a log nobody signed yet): a key file that does not match, or is missing while the log names a key, leaves it reading
without signing (``hermes_notary_signing`` 0, ``identity_mismatch`` logged) rather than breaking the chain.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from nats.js import JetStreamContext

from hermes_proto.bus import EventStore, RawMessage
from hermes_proto.identity import (
    KEY_FILE,
    NEXT_KEY_FILE,
    Identity,
    IdentityError,
    new_secret,
    read_secret,
    soul_digest,
    write_secret,
)
from hermes_proto.ids import derived_id, utcnow
from hermes_proto.integrity import (
    LOG_AGGREGATE,
    ZERO,
    CheckpointSigned,
    IdentityHandedOff,
    SoulAttested,
    attestation_digest,
    attestation_id,
    checkpoint_digest,
    handoff_digest,
    millis,
)

from hermes_notary import metrics
from hermes_notary.head import LogHead, read_head
from hermes_notary.tree import LeafTree, entries_of

log = structlog.get_logger("hermes.notary")


def envelope(aggregate_id: str, now: datetime, *parts: str) -> dict[str, Any]:
    """The envelope of a notary event: its id derived from ``parts`` (so an append retried after a crash is
    deduplicated), its own correlation, ``now``."""
    event_id = derived_id(*parts)
    return {"event_id": event_id, "aggregate_id": aggregate_id, "occurred_at": now, "correlation_id": event_id}


class Notary:
    """``every_events`` / ``every_seconds``: when a checkpoint is due; ``max_entries``: leaves per checkpoint."""

    def __init__(
        self,
        js: JetStreamContext,
        store: EventStore,
        tree: LeafTree,
        identity_dir: Path,
        soul_path: Path,
        every_events: int,
        every_seconds: float,
        max_entries: int,
    ) -> None:
        self.js, self.store, self.tree = js, store, tree
        self.identity_dir, self.soul_path = identity_dir, soul_path
        self.every_events, self.every_seconds, self.max_entries = every_events, every_seconds, max_entries
        self.identity: Identity | None = None
        self.signing = False
        self.signed_size, self.checkpoint_seq, self.root = 0, 0, ""
        self.last_attestation: SoulAttested | None = None
        self._lock = asyncio.Lock()

    def _soul_text(self) -> str | None:
        try:
            return self.soul_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    def start(self, head: LogHead) -> None:
        """Adopt the stream's state and load (or for a fresh log create) the key. Raises nothing: a key problem
        leaves the notary reading without signing."""
        if head.checkpoint is not None:
            self.signed_size, self.root = head.checkpoint.tree_size, head.checkpoint.root
            self.checkpoint_seq = head.checkpoint_seq
        self.last_attestation = head.attestation
        self._settle_rotation(head)
        key_path = self.identity_dir / KEY_FILE
        try:
            if key_path.exists() or head.current_key is None:
                self.identity = self._load_or_create(key_path)
        except IdentityError as exc:
            log.error("identity_unreadable", error=str(exc))
        mine = self.identity.public_key if self.identity else None
        self.signing = mine is not None and head.current_key in (None, mine)
        if not self.signing:
            log.error("identity_mismatch", log_key=head.current_key, key_file=mine, effect="nothing is signed")
        metrics.SIGNING.set(1 if self.signing else 0)
        metrics.SIGNED_SIZE.set(self.signed_size)

    def _settle_rotation(self, head: LogHead) -> None:
        """A rotation interrupted around its handoff: the successor becomes the key when the log holds its handoff,
        else it is dropped. An unreadable successor is kept (it may be the only copy of the log's key)."""
        pending = self.identity_dir / NEXT_KEY_FILE
        if not pending.exists():
            return
        try:
            successor = read_secret(pending)
        except IdentityError as exc:
            log.error("identity_pending_unreadable", error=str(exc), effect="kept; fix its mode and restart")
            return
        if head.handoff is not None and head.handoff.public_key == successor.public_key:
            write_secret(self.identity_dir, bytes.fromhex(pending.read_text().strip()))
            self.identity = successor
            log.info("identity_handoff_completed", public_key=successor.public_key)
        pending.unlink(missing_ok=True)

    async def _append(self, event: CheckpointSigned | SoulAttested | IdentityHandedOff) -> int:
        """Append one event; when JetStream does not acknowledge, adopt what the stream holds now (the event may be
        stored all the same) before raising, so the next signature builds on the stored chain."""
        try:
            [seq] = await self.store.append([event])
            return seq
        except Exception:
            try:
                await self.resync()
            except Exception as exc:  # NATS away: the notary stops signing until it can read the head again
                self.signing = False
                metrics.SIGNING.set(0)
                log.error("notary_resync_failed", error=repr(exc), effect="signing paused")
            raise

    async def resync(self) -> None:
        """Take the last checkpoint, attestation and handoff from the stream, settle a pending rotation and sign
        again only with the log's key. Raises what JetStream raises."""
        head = await read_head(self.js)
        if head.checkpoint is not None:
            self.signed_size, self.root = head.checkpoint.tree_size, head.checkpoint.root
            self.checkpoint_seq = head.checkpoint_seq
        self.last_attestation = head.attestation
        self._settle_rotation(head)
        mine = self.identity.public_key if self.identity else None
        self.signing = mine is not None and head.current_key in (None, mine)
        metrics.SIGNING.set(1 if self.signing else 0)
        log.info("notary_resynced", signed_size=self.signed_size, signing=self.signing)

    def _load_or_create(self, key_path: Path) -> Identity:
        if key_path.exists():
            return read_secret(key_path)
        soul = self._soul_text() or ""
        identity = write_secret(self.identity_dir, new_secret(bytes.fromhex(soul_digest(soul))))
        log.info("identity_created", public_key=identity.public_key, path=str(key_path))
        return identity

    def unsigned(self) -> int:
        """Leaves read but not signed, not counting the last checkpoint's own event."""
        own = 1 if 0 < self.checkpoint_seq <= self.tree.size else 0
        return max(0, self.tree.size - self.signed_size - own)

    async def on_batch(self, batch: list[RawMessage]) -> None:
        """Append the batch's leaves (the follower calls this in stream order); checkpoint when enough are unsigned."""
        entries, gaps = entries_of(batch, self.tree.size)
        if gaps:
            metrics.GAPS.inc(gaps)
            log.warning("log_gap", gaps=gaps, before=batch[-1].sequence)
        await self.tree.append(entries)
        metrics.TREE_SIZE.set(self.tree.size)
        metrics.UNSIGNED.set(self.unsigned())
        if self.unsigned() >= self.every_events:
            await self.checkpoint()

    async def checkpoint(self) -> CheckpointSigned | None:
        """Sign the unsigned leaves (at most ``max_entries``) and append the checkpoint; None when nothing is due or
        the notary may not sign. Raises what JetStream raises (the next call tries again)."""
        async with self._lock:
            if not self.signing or self.identity is None or self.unsigned() == 0:
                return None
            started = time.perf_counter()
            if self.signed_size and self.tree.size >= self.signed_size:
                if await self.tree.root(self.signed_size) != self.root:  # a foreign or stale tree: never sign it
                    self.signing = False
                    metrics.SIGNING.set(0)
                    log.error("tree_mismatch", signed_size=self.signed_size, effect="signing stopped; restart rebuilds")
                    return None
            size = min(self.tree.size, self.signed_size + self.max_entries)
            root = await self.tree.root(size)
            entries = await self.tree.entries(self.signed_size + 1, size)
            now = utcnow()
            event = CheckpointSigned(
                **envelope(LOG_AGGREGATE, now, "checkpoint", self.identity.public_key, str(size)),
                tree_size=size,
                previous_size=self.signed_size,
                root=root,
                entries=b"".join(entries),
                public_key=self.identity.public_key,
                signature=self.identity.sign(checkpoint_digest(size, root, millis(now))),
            )
            seq = await self._append(event)
            self.signed_size, self.checkpoint_seq, self.root = size, seq, root
            metrics.CHECKPOINTS.inc()
            metrics.CHECKPOINT_SECONDS.observe(time.perf_counter() - started)
            metrics.SIGNED_SIZE.set(size)
            metrics.LAST_CHECKPOINT.set(time.time())
            metrics.UNSIGNED.set(self.unsigned())
            log.info("checkpoint_signed", tree_size=size, root=root, sequence=seq, leaves=len(entries))
            return event

    async def attest_soul(self) -> SoulAttested | None:
        """Attest SOUL.md when its hash differs from the last attested one; None when unchanged or unreadable."""
        text = await asyncio.to_thread(self._soul_text)
        if text is None:
            return None
        digest = soul_digest(text)
        async with self._lock:
            last = self.last_attestation
            if (last is not None and last.soul_sha256 == digest) or not self.signing or self.identity is None:
                return None
            index, previous = (last.index + 1, attestation_id(last)) if last else (0, ZERO)
            now = utcnow()
            event = SoulAttested(
                **envelope("soul", now, "soul", self.identity.public_key, str(index), digest),
                index=index,
                soul_sha256=digest,
                previous=previous,
                public_key=self.identity.public_key,
                signature=self.identity.sign(attestation_digest(index, digest, previous, millis(now))),
            )
            await self._append(event)
            self.last_attestation = event
            metrics.ATTESTATIONS.inc()
            log.info("soul_attested", index=index, soul_sha256=digest, previous=previous)
            return event

    async def rotate(self, reason: str = "") -> Identity:
        """Hand the identity over to a fresh key: both keys sign the handoff, it is appended, then the successor
        replaces ``instance.key``. Raises RuntimeError when the notary may not sign."""
        async with self._lock:
            if not self.signing or self.identity is None:
                raise RuntimeError("the notary's key is not the log's key; it cannot hand over")
            if (self.identity_dir / NEXT_KEY_FILE).exists():
                raise RuntimeError("a rotation is pending; restart the notary to settle it first")
            soul = bytes.fromhex(soul_digest(self._soul_text() or ""))
            secret = new_secret(soul)
            successor = write_secret(self.identity_dir, secret, NEXT_KEY_FILE)
            now = utcnow()
            previous = self.identity.public_key
            root = self.root or ZERO
            digest = handoff_digest(previous, successor.public_key, millis(now), self.signed_size, root)
            event = IdentityHandedOff(
                **envelope("key", now, "handoff", previous, successor.public_key),
                previous_public_key=previous,
                public_key=successor.public_key,
                tree_size=self.signed_size,
                root=root,
                signature_previous=self.identity.sign(digest),
                signature_new=successor.sign(digest),
            )
            await self._append(event)
            write_secret(self.identity_dir, secret)
            (self.identity_dir / NEXT_KEY_FILE).unlink(missing_ok=True)
            self.identity = successor
            metrics.HANDOFFS.inc()
            log.info("identity_handed_off", previous=previous, public_key=successor.public_key, reason=reason[:200])
            return successor

    async def run_timers(self, stop: asyncio.Event, soul_poll_s: float) -> None:
        """Checkpoint every ``every_seconds`` while something is unsigned; check SOUL.md every ``soul_poll_s``."""
        next_checkpoint = time.monotonic() + self.every_seconds
        while not stop.is_set():
            try:
                await self.attest_soul()
                if time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + self.every_seconds
                    await self.checkpoint()
            except Exception as exc:  # NATS away: the next tick tries again
                log.warning("notary_tick_failed", error=repr(exc))
            try:
                await asyncio.wait_for(stop.wait(), timeout=min(soul_poll_s, self.every_seconds))
            except TimeoutError:
                pass

"""Scheduled backups: ``hermes_proto.backup.write_backup`` on a cron (``HERMES_BACKUP_CRON``, default ``0 2 * * *``,
in ``HERMES_BACKUP_TIMEZONE``), into ``HERMES_BACKUP_DIR``, keeping the newest ``HERMES_BACKUP_KEEP`` archives.

The instance key goes in sealed with ``HERMES_BACKUP_PASSPHRASE_FILE`` (or ``HERMES_BACKUP_PASSPHRASE``); without a
passphrase the archive is written without the key and the log says so (a restore then needs the key from elsewhere
to go on signing). A failed run is logged and counted and the next due time still comes; the gauge
``hermes_backup_last_success_timestamp_seconds`` drives the alert ``HermesBackupStale`` (older than two days).

The data keys (:mod:`hermes_proto.keystore`): with a passphrase every backup replaces ``hermes-keys.sealed`` in
``HERMES_BACKUP_DIR``, and so does every forget the notary sees in the log (``PersonalDataForgotten``, the keys it
names left out even before the orchestrator has erased them) and the notary's start (forgets made while it was
down): a forgotten key leaves the file within moments. Without a passphrase no key file is written (the log says
so) and one already there is not touched. The notary's bus role reads the bucket with ``keys="export"`` rights.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog
from croniter import croniter
from nats.aio.client import Client as NATS

from hermes_proto import subjects
from hermes_proto.backup import BackupError, BackupResult, write_backup
from hermes_proto.bus import LogFollower, RawMessage
from hermes_proto.codec import decode_event
from hermes_proto.forgetting import PersonalDataForgotten
from hermes_proto.keyring import Keyring
from hermes_proto.keystore import KEY_FILE, export_keys, write_key_file

from hermes_notary import metrics

log = structlog.get_logger("hermes.notary")


class BackupSchedule:
    """``cron``: five fields (croniter); ``keep``: archives kept in ``dest``; ``passphrase``: None writes no key."""

    def __init__(
        self, nc: NATS, home: Path, dest: Path, cron: str, zone: str, keep: int, passphrase: bytes | None
    ) -> None:
        if not croniter.is_valid(cron):
            raise ValueError(f"HERMES_BACKUP_CRON {cron!r} is not a cron expression")
        self.nc, self.home, self.dest = nc, home, dest
        self.cron, self.zone, self.keep, self.passphrase = cron, ZoneInfo(zone), keep, passphrase
        self._keys_lock = asyncio.Lock()  # a backup's key file and a forget's: one writer at a time, in order

    def next_due(self, now: datetime) -> datetime:
        """The next due time after ``now`` (aware), in UTC."""
        return croniter(self.cron, now.astimezone(self.zone)).get_next(datetime).astimezone(UTC)

    async def run_once(self) -> BackupResult | None:
        """One backup now; None when it failed (logged, counted)."""
        started = time.perf_counter()
        try:
            async with self._keys_lock:
                result = await write_backup(
                    self.nc, self.home, self.dest, self.passphrase, self.keep, include_key=self.passphrase is not None
                )
        except (BackupError, OSError) as exc:
            metrics.BACKUPS.labels("failed").inc()
            log.error("backup_failed", dest=str(self.dest), error=repr(exc)[:500])
            return None
        metrics.BACKUPS.labels("ok").inc()
        metrics.BACKUP_SECONDS.observe(time.perf_counter() - started)
        metrics.BACKUP_BYTES.set(result.size)
        metrics.LAST_BACKUP.set(time.time())
        log.info(
            "backup_written",
            path=str(result.path),
            bytes=result.size,
            pruned=len(result.pruned),
            with_key=self.passphrase is not None,
            key_file=str(result.key_file) if result.key_file else None,
            data_keys=result.keys,
        )
        return result

    def key_file(self) -> Path:
        return self.dest.expanduser().resolve() / KEY_FILE

    async def rewrite_keys(self, leave_out: dict[str, int] | None = None, reason: str = "forget") -> int | None:
        """Replace the key file with the bucket's live keys minus ``leave_out`` (``{key_id: before_ms}``); only when
        there is a passphrase and a key file already (the next backup writes a first one). Returns the keys
        written, None when nothing was written (a failure is logged: the next backup tries again)."""
        if not self.passphrase:
            return None
        try:
            async with self._keys_lock:
                path = self.key_file()
                if not await asyncio.to_thread(path.is_file):
                    return None
                keyring = await Keyring.connect(self.nc.jetstream())
                keys = await export_keys(keyring, self.nc, leave_out)
                count = await asyncio.to_thread(write_key_file, path, keys, self.passphrase)
        except Exception as exc:  # noqa: BLE001 - logged; the signing must go on
            log.error("key_file_failed", path=str(self.key_file()), reason=reason, error=repr(exc)[:500])
            return None
        log.info("key_file_written", path=str(path), reason=reason, data_keys=count)
        return count

    async def on_forgets(self, batch: list[RawMessage]) -> None:
        """A batch of ``PersonalDataForgotten`` events: the key file written again without the keys they name."""
        leave_out: dict[str, int] = {}
        for message in batch:
            try:
                event = decode_event(message.data)
            except Exception:  # noqa: BLE001 - an unreadable event names no key
                continue
            if isinstance(event, PersonalDataForgotten):
                before = int(event.occurred_at.timestamp() * 1000)
                for key_id in event.key_ids:
                    leave_out[key_id] = max(leave_out.get(key_id, before), before)
        if leave_out:
            await self.rewrite_keys(leave_out, "forget")

    async def run(self, stop: asyncio.Event) -> None:
        """Back up at every due time until ``stop``; with a passphrase, keep the key file free of forgotten keys."""
        follower = None
        if self.passphrase is None:
            log.warning(
                "backup_without_key",
                reason="no HERMES_BACKUP_PASSPHRASE(_FILE): archives hold no instance key, and no data keys' file is"
                " written: their personal events can be restored only with a key file written with a passphrase",
            )
        else:
            follower = await self._follow_forgets()
            await self.rewrite_keys(reason="start")
        tasks = [asyncio.create_task(follower.run(), name="notary-forgets")] if follower else []
        try:
            while not stop.is_set():
                due = self.next_due(datetime.now(UTC))
                delay = (due - datetime.now(UTC)).total_seconds()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
                    return
                except TimeoutError:
                    pass
                await self.run_once()
        finally:
            if follower is not None:
                follower.stop()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow_forgets(self) -> LogFollower | None:
        js = self.nc.jetstream()
        try:
            last = (await js.stream_info(subjects.EVENTS_STREAM)).state.last_seq
        except Exception as exc:  # noqa: BLE001 - backups go on; forgets then reach the file at the next backup
            log.error("forget_follow_failed", error=repr(exc)[:500])
            return None
        forgets = subjects.event_type_filter(PersonalDataForgotten)
        return LogFollower(js, subjects.EVENTS_STREAM, forgets, self.on_forgets, start_after=last, batch=100)

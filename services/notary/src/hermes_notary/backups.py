"""Scheduled backups: ``hermes_proto.backup.write_backup`` on a cron (``HERMES_BACKUP_CRON``, default ``0 2 * * *``,
in ``HERMES_BACKUP_TIMEZONE``), into ``HERMES_BACKUP_DIR``, keeping the newest ``HERMES_BACKUP_KEEP`` archives.

The instance key goes in sealed with ``HERMES_BACKUP_PASSPHRASE_FILE`` (or ``HERMES_BACKUP_PASSPHRASE``); without a
passphrase the archive is written without the key and the log says so (a restore then needs the key from elsewhere
to go on signing). A failed run is logged and counted and the next due time still comes; the gauge
``hermes_backup_last_success_timestamp_seconds`` drives the alert ``HermesBackupStale`` (older than two days).
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

from hermes_proto.backup import BackupError, BackupResult, write_backup

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

    def next_due(self, now: datetime) -> datetime:
        """The next due time after ``now`` (aware), in UTC."""
        return croniter(self.cron, now.astimezone(self.zone)).get_next(datetime).astimezone(UTC)

    async def run_once(self) -> BackupResult | None:
        """One backup now; None when it failed (logged, counted)."""
        started = time.perf_counter()
        try:
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
        )
        return result

    async def run(self, stop: asyncio.Event) -> None:
        """Back up at every due time until ``stop``."""
        if self.passphrase is None:
            log.warning("backup_without_key", reason="no HERMES_BACKUP_PASSPHRASE(_FILE): archives hold no key")
        while not stop.is_set():
            due = self.next_due(datetime.now(UTC))
            delay = (due - datetime.now(UTC)).total_seconds()
            try:
                await asyncio.wait_for(stop.wait(), timeout=max(0.0, delay))
                return
            except TimeoutError:
                pass
            await self.run_once()

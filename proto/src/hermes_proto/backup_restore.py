"""Restoring a backup (:mod:`hermes_proto.backup`) into an empty or new home: the archive checked member by member
(:func:`hermes_proto.backup_archive.read_archive`), the sealed secrets opened, the files and the skills repository
laid out, the streams published again into a nats-server of the restore's own.

Everything is staged inside the home itself (``home/.hermes-restore-<random>``, mode 0700: an unsealed key is never
readable by others, not even when the restore is killed) and moved into place at the end, so a home that is a mount
point works (no rename across file systems). A failure removes the stage and what was moved: a home that existed
(empty) is left empty, one the restore created is removed.

The data keys (:mod:`hermes_proto.keystore`): the key file is opened before anything is written (a wrong passphrase
or a damaged file refuses the restore); once the streams are back, its keys are created in the restored server's
bucket, minus the generations the restored log itself forgets, so ``hermes up`` rebuilds the read models with the
personal events readable. Without a key file the restore goes on and warns: those events stay unreadable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NATS

from hermes_proto import SCHEMA_VERSION
from hermes_proto.backup_archive import BackupError, Manifest, read_archive
from hermes_proto.backup_home import IDENTITY_DIR, SealError, unseal
from hermes_proto.backup_replay import RestoredStream, restore_stream
from hermes_proto.backup_skills import unbundle_skills
from hermes_proto.backup_streams import StreamError
from hermes_proto.bus import credential_options
from hermes_proto.keyring import Keyring, ensure_bucket
from hermes_proto.keystore import LogKeys, StoredKey, import_keys, read_key_file, scan_log
from hermes_proto.settings import BusSettings
from hermes_proto.subjects import EVENTS_STREAM

STAGE_PREFIX = ".hermes-restore-"

NatsLauncher = Callable[[Path], AbstractContextManager[BusSettings]]
"""Starts a local nats-server storing under the given folder; yields the settings (URL, admin seed) to reach it."""


@dataclass(frozen=True)
class RestoreResult:
    """A restored home: ``home``, the archive's ``manifest``, messages restored per stream, consumers put back,
    plain ``files`` and ``secrets`` written, ``warnings`` (what was only partly restored); ``keys``: data keys
    created in the restored bucket from the key file (0 without one)."""

    home: Path
    manifest: Manifest
    messages: dict[str, int]
    consumers: int
    files: int
    secrets: int
    warnings: list[str]
    keys: int = 0


async def restore_backup(
    archive: Path, home: Path, passphrase: bytes | None, launch: NatsLauncher, key_file: Path | None = None
) -> RestoreResult:
    """Restore ``archive`` into ``home`` (absent or an empty folder): files, the sealed secrets opened with
    ``passphrase`` (mode 0600; the identity folder 0700), the skills repository, and the streams into a nats-server
    that ``launch(<stage>/nats)`` runs for the time of the restore (the store then moved to ``home/nats``, where
    ``hermes up`` keeps it), then the data keys of ``key_file`` (opened with ``passphrase``) into its bucket; None:
    no keys, a warning. Staged inside ``home`` (see the module): a failure leaves ``home`` as it was. Raises
    :class:`BackupError`: ``home_not_empty``, ``passphrase_required``, ``bad_passphrase``, the errors of
    :func:`hermes_proto.backup_archive.check_archive` and of :func:`hermes_proto.keystore.read_key_file` (a
    :class:`~hermes_proto.keystore.KeyFileError`), ``skills_failed`` and the stream errors."""
    keys = await asyncio.to_thread(read_key_file, key_file, passphrase) if key_file is not None else None
    home = home.expanduser().absolute()
    created = not home.exists() and not home.is_symlink()
    if not created:
        _check_empty(home)
    else:
        home.parent.mkdir(parents=True, exist_ok=True)
        home.mkdir(mode=0o700)
    moved: list[Path] = []
    try:
        stage = Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=home))  # mode 0700
        try:
            unpacked, target = stage / "archive", stage / "home"
            manifest = await asyncio.to_thread(read_archive, archive, unpacked)
            if manifest.sealed and not passphrase:
                raise BackupError("passphrase_required", "the archive holds sealed secrets: give their passphrase")
            files = await asyncio.to_thread(_lay_out, unpacked, target, manifest, passphrase or b"")
            log_keys = await asyncio.to_thread(scan_log, unpacked / "streams" / EVENTS_STREAM / "messages.jsonl")
            restored, imported = await _restore_streams(unpacked, target, manifest, launch, keys, log_keys)
            for child in sorted(target.iterdir()):
                moved.append(home / child.name)
                os.replace(child, home / child.name)
        finally:
            await asyncio.to_thread(shutil.rmtree, stage, ignore_errors=True)
    except BaseException:
        if created:
            shutil.rmtree(home, ignore_errors=True)
        else:
            for path in moved:
                _remove(path)
        raise
    warnings = [w for r in restored for w in r.warnings] + [f"skipped at backup: {p}" for p in manifest.skipped]
    warnings += [f"left out at backup (a secret, no passphrase): {p}" for p in manifest.skipped_secrets]
    if manifest.schema_version > SCHEMA_VERSION:
        warnings.append(f"archive schema version {manifest.schema_version} is newer than {SCHEMA_VERSION}")
    if keys is None and log_keys.needed:
        warnings.append(
            f"no key file: the personal events of {len({k for k, _ in log_keys.needed})} aggregates stay unreadable"
            " (restore again with --keys <backup folder>/hermes-keys.sealed)"
        )
    elif keys is not None and (missing := log_keys.unreadable(keys)):
        warnings.append(f"the key file lacks {missing} data keys the log needs: those personal events stay unreadable")
    messages = {r.name: r.messages for r in restored}
    consumers = sum(r.consumers for r in restored)
    secrets = len(manifest.sealed)
    return RestoreResult(home, manifest, messages, consumers, files, secrets, warnings, imported)


def _check_empty(home: Path) -> None:
    if not home.is_dir():
        raise BackupError("home_not_empty", f"{home} is not a folder: restore only into an empty or new folder")
    children = sorted(p.name for p in home.iterdir())
    if children and all(name.startswith(STAGE_PREFIX) for name in children):
        raise BackupError("home_not_empty", f"{home / children[0]} is left from a stopped restore: remove it first")
    if children:
        raise BackupError("home_not_empty", f"{home} is not empty: restore only into an empty or new folder")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _lay_out(unpacked: Path, target: Path, manifest: Manifest, passphrase: bytes) -> int:
    target.mkdir(mode=0o700)
    if manifest.skills_head:  # first, into a folder that does not exist yet (read_archive: no home/skills/ member)
        try:
            unbundle_skills(unpacked / "skills.bundle", target / "skills", manifest.skills_head)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            raise BackupError("skills_failed", f"skills.bundle: {exc}") from None
    for rel in manifest.sealed:  # read_archive: identity/<name>, cli.toml or mcp.toml
        try:
            secret = unseal((unpacked / "secrets" / f"{rel}.sealed").read_bytes(), passphrase, rel)
        except SealError:
            raise BackupError("bad_passphrase", f"{rel} does not open with this passphrase") from None
        path = target / rel
        if rel.startswith(f"{IDENTITY_DIR}/"):
            path.parent.mkdir(exist_ok=True, mode=0o700)
            os.chmod(path.parent, 0o700)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
            handle.write(secret)
    files = 0
    for member in manifest.members:
        if member.path.startswith("home/"):
            path = target / member.path.removeprefix("home/")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(unpacked / member.path, path)
            os.chmod(path, member.mode & 0o777)
            files += 1
    return files


async def open_bus(settings: BusSettings, name: str, timeout_s: float = 10.0) -> NATS:
    """A plain connection for a backup or a restore with ``settings``' credentials (:func:`hermes_proto.bus.
    credential_options`): no reconnects, no logging; the first connection retried for up to ``timeout_s`` seconds.
    Raises :class:`BackupError` (``nats_unreachable``)."""

    async def _quiet(_exc: Exception) -> None:
        return None

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            options = credential_options(settings)
            connecting = nats.connect(
                settings.nats_url,
                name=name,
                allow_reconnect=False,
                max_reconnect_attempts=1,  # nats-py retries a first connection forever below 1
                reconnect_time_wait=0.2,
                connect_timeout=2,
                error_cb=_quiet,
                **options,
            )
            return await asyncio.wait_for(connecting, timeout=max(1.0, deadline - time.monotonic()))
        except Exception as exc:
            if time.monotonic() > deadline:
                raise BackupError("nats_unreachable", f"cannot reach NATS at {settings.nats_url} ({exc!r})") from None
            await asyncio.sleep(0.2)


async def _restore_streams(
    unpacked: Path,
    target: Path,
    manifest: Manifest,
    launch: NatsLauncher,
    keys: list[StoredKey] | None,
    log_keys: LogKeys,
) -> tuple[list[RestoredStream], int]:
    """The streams, then the data keys (the bucket as :func:`hermes_proto.bus.ensure_streams` makes it): ``(streams
    restored, keys created)``."""
    (target / "nats").mkdir(exist_ok=True)
    restored: list[RestoredStream] = []
    imported = 0
    with launch(target / "nats") as settings:
        nc = await open_bus(settings, "hermes-restore", timeout_s=15)
        try:
            for stream in manifest.streams:
                restored.append(await restore_stream(nc, unpacked / "streams" / stream.name))
            if keys is not None:
                await ensure_bucket(nc.jetstream())
                keyring = await Keyring.connect(nc.jetstream())
                imported = await import_keys(keyring, [k for k in keys if not log_keys.dead(k)])
        except StreamError as exc:
            raise BackupError(exc.code, exc.detail) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BackupError("nats_error", f"restoring the streams: {exc!r}") from None
        finally:
            await nc.close()
    return restored, imported

"""Backups that restore: one ``hermes-backup-<UTC time>.tar.gz`` with every Hermes stream's messages (original
sequences, subjects, header bytes and data), each stream's configuration and durable consumers, and the home's files
that no replay rebuilds (:mod:`hermes_proto.backup_home` says which and why); the instance key only sealed with a
passphrase. ``manifest.json``, the archive's first member, lists every other member with its size and SHA-256.

Layout: ``manifest.json``; ``streams/<NAME>/stream.json`` + ``messages.jsonl`` (:mod:`hermes_proto.backup_streams`);
``home/<path>`` (plain files); ``secrets/<path>.sealed`` (:func:`hermes_proto.backup_home.seal`); ``skills.bundle``
(``git bundle`` of ``skills/``). Used by ``hermes backup``/``hermes restore`` and a scheduled service alike.
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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
from nats.aio.client import Client as NATS

from hermes_proto import SCHEMA_VERSION
from hermes_proto.backup_archive import (
    FORMAT,
    BackupError,
    Manifest,
    MemberEntry,
    StreamEntry,
    check_archive,
    member_entry,
    pack,
    prune_backups,
    read_archive,
)
from hermes_proto.backup_home import (
    SealError,
    bundle_skills,
    copy_file,
    plain_files,
    seal,
    secret_files,
    unbundle_skills,
    unseal,
)
from hermes_proto.backup_replay import RestoredStream, restore_stream
from hermes_proto.backup_streams import StreamError, dump_stream
from hermes_proto.bus import credential_options, stream_configs
from hermes_proto.settings import BusSettings

__all__ = [
    "BackupError",
    "BackupResult",
    "Manifest",
    "MemberEntry",
    "RestoreResult",
    "StreamEntry",
    "check_archive",
    "open_bus",
    "prune_backups",
    "restore_backup",
    "write_backup",
]


@dataclass(frozen=True)
class BackupResult:
    """A written archive: ``path``, ``size`` (bytes), its ``manifest``, the older archives ``pruned``."""

    path: Path
    size: int
    manifest: Manifest
    pruned: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class RestoreResult:
    """A restored home: ``home``, the archive's ``manifest``, messages restored per stream, consumers put back,
    plain ``files`` and ``secrets`` written, ``warnings`` (what was only partly restored)."""

    home: Path
    manifest: Manifest
    messages: dict[str, int]
    consumers: int
    files: int
    secrets: int
    warnings: list[str]


async def write_backup(
    nc: NATS,
    home: Path,
    dest_dir: Path,
    passphrase: bytes | None,
    keep: int | None = None,
    include_key: bool = True,
    streams: list[str] | None = None,
) -> BackupResult:
    """Archive the Hermes streams (``streams``: default the names of :func:`hermes_proto.bus.stream_configs`) read
    over ``nc`` and ``home``'s files into a new archive in ``dest_dir`` (created; written to a temporary file, then
    renamed; mode 0600), then with ``keep`` delete all but the newest ``keep`` archives there. Raises
    :class:`BackupError`: ``passphrase_required`` when ``home/identity`` holds a key, ``include_key`` is true and
    ``passphrase`` is empty; ``invalid_keep`` for ``keep`` < 1; a stream error when the server fails."""
    if keep is not None and keep < 1:
        raise BackupError("invalid_keep", f"keep must be at least 1, not {keep}")
    home, dest = home.expanduser().resolve(), dest_dir.expanduser().resolve()
    secrets = secret_files(home) if include_key else []
    if secrets and not passphrase:
        raise BackupError("passphrase_required", f"{home / secrets[0]} is only archived sealed: give a passphrase")
    if streams is None:
        streams = [config.name for config in stream_configs(BusSettings())]
    created = datetime.now(UTC)
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".hermes-backup-", dir=dest))
    try:
        dumps, missing = [], []
        for name in streams:
            try:
                dump = await dump_stream(nc, name, stage / "streams" / name)
            except StreamError as exc:
                raise BackupError(exc.code, exc.detail) from None
            except (nats.errors.Error, TimeoutError) as exc:
                raise BackupError("nats_error", f"reading {name}: {exc!r}") from None
            if dump is None:
                missing.append(name)
            else:
                dumps.append(StreamEntry(dump.name, dump.messages, dump.first_seq, dump.last_seq, dump.consumers))
        skipped, head = await asyncio.to_thread(_stage_home, home, dest, stage, secrets, passphrase)
        members = [member_entry(stage, path) for path in sorted(p for p in stage.rglob("*") if p.is_file())]
        manifest = Manifest(
            FORMAT, SCHEMA_VERSION, created.isoformat(), members, dumps, secrets, head, skipped, missing
        )
        path = await asyncio.to_thread(pack, stage, manifest, dest, created)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    pruned = prune_backups(dest, keep) if keep is not None else []
    return BackupResult(path, path.stat().st_size, manifest, pruned)


def _stage_home(
    home: Path, dest: Path, stage: Path, secrets: list[str], passphrase: bytes | None
) -> tuple[list[str], str | None]:
    files, skipped = plain_files(home, skip=dest if home in dest.parents else None)
    for rel in files:
        try:
            copy_file(home / rel, stage / "home" / rel)
        except FileNotFoundError:  # removed since the listing
            skipped.append(rel)
    for rel in secrets:
        sealed = stage / "secrets" / f"{rel}.sealed"
        sealed.parent.mkdir(parents=True, exist_ok=True)
        sealed.write_bytes(seal((home / rel).read_bytes(), passphrase or b"", rel))
    try:
        head = bundle_skills(home, stage / "skills.bundle")
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackupError("skills_failed", f"git bundle of {home / 'skills'} failed: {exc}") from None
    return sorted(skipped), head


NatsLauncher = Callable[[Path], AbstractContextManager[BusSettings]]
"""Starts a local nats-server storing under the given folder; yields the settings (URL, admin seed) to reach it."""


async def restore_backup(archive: Path, home: Path, passphrase: bytes | None, launch: NatsLauncher) -> RestoreResult:
    """Restore ``archive`` into ``home`` (absent or an empty folder): files, the sealed secrets opened with
    ``passphrase`` (mode 0600 in a 0700 folder), the skills repository, and the streams into a nats-server that
    ``launch(home / "nats")`` runs for the time of the restore (where ``hermes up`` keeps its store). Everything is
    staged next to ``home`` and moved in at the end: a failure leaves ``home`` as it was. Raises
    :class:`BackupError`: ``home_not_empty``, ``passphrase_required``, ``bad_passphrase``, the errors of
    :func:`check_archive`, ``skills_failed`` and the stream errors."""
    home = home.expanduser().absolute()
    if home.exists() and (not home.is_dir() or any(home.iterdir())):
        raise BackupError("home_not_empty", f"{home} is not empty: restore only into an empty or new folder")
    home.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{home.name}.restore-", dir=home.parent))
    try:
        unpacked, target = stage / "archive", stage / "home"
        manifest = await asyncio.to_thread(read_archive, archive, unpacked)
        if manifest.sealed and not passphrase:
            raise BackupError("passphrase_required", "the archive holds the sealed instance key: give its passphrase")
        files = await asyncio.to_thread(_lay_out, unpacked, target, manifest, passphrase or b"")
        restored = await _restore_streams(unpacked, target, manifest, launch)
        if home.exists():  # an empty folder (perhaps a mount point): keep it, move the contents in
            for child in target.iterdir():
                os.replace(child, home / child.name)
        else:
            os.replace(target, home)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    warnings = [w for r in restored for w in r.warnings] + [f"skipped at backup: {p}" for p in manifest.skipped]
    if manifest.schema_version > SCHEMA_VERSION:
        warnings.append(f"archive schema version {manifest.schema_version} is newer than {SCHEMA_VERSION}")
    messages = {r.name: r.messages for r in restored}
    consumers = sum(r.consumers for r in restored)
    return RestoreResult(home, manifest, messages, consumers, files, len(manifest.sealed), warnings)


def _lay_out(unpacked: Path, target: Path, manifest: Manifest, passphrase: bytes) -> int:
    target.mkdir(mode=0o700)
    for rel in manifest.sealed:
        try:
            secret = unseal((unpacked / "secrets" / f"{rel}.sealed").read_bytes(), passphrase, rel)
        except SealError:
            raise BackupError("bad_passphrase", f"{rel} does not open with this passphrase") from None
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
    if manifest.skills_head:
        try:
            unbundle_skills(unpacked / "skills.bundle", target / "skills", manifest.skills_head)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BackupError("skills_failed", f"skills.bundle: {exc}") from None
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
    unpacked: Path, target: Path, manifest: Manifest, launch: NatsLauncher
) -> list[RestoredStream]:
    (target / "nats").mkdir(exist_ok=True)
    restored: list[RestoredStream] = []
    with launch(target / "nats") as settings:
        nc = await open_bus(settings, "hermes-restore", timeout_s=15)
        try:
            for stream in manifest.streams:
                restored.append(await restore_stream(nc, unpacked / "streams" / stream.name))
        except StreamError as exc:
            raise BackupError(exc.code, exc.detail) from None
        except (nats.errors.Error, TimeoutError) as exc:
            raise BackupError("nats_error", f"restoring the streams: {exc!r}") from None
        finally:
            await nc.close()
    return restored

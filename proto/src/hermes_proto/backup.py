"""Backups that restore: one ``hermes-backup-<UTC time>.tar.gz`` with every Hermes stream's messages (original
sequences, subjects, header bytes and data), each stream's configuration and durable consumers, and the home's files
that no replay rebuilds (:mod:`hermes_proto.backup_home` says which and why); the secrets (the instance key,
``cli.toml``, ``mcp.toml``) only sealed with a passphrase. ``manifest.json``, the archive's first member, lists every
other member with its size and SHA-256.

Layout: ``manifest.json``; ``streams/<NAME>/stream.json`` + ``messages.jsonl`` (:mod:`hermes_proto.backup_streams`);
``home/<path>`` (plain files); ``secrets/<path>.sealed`` (:func:`hermes_proto.backup_home.seal`); ``skills.bundle``
(``git bundle`` of ``skills/``, :mod:`hermes_proto.backup_skills`). Used by ``hermes backup``/``hermes restore`` and
the notary's scheduled backups alike: there :func:`write_backup` runs on the service's event loop, so only the NATS
requests stay on it; copying, hashing, packing and writing files run in worker threads. Restoring:
:mod:`hermes_proto.backup_restore`.

The data keys' bucket (the keys of the sealed personal events) is never in an archive: with a passphrase a backup
replaces the one key file beside the archives instead (``hermes-keys.sealed``, :mod:`hermes_proto.keystore`);
without one, the personal events of the archive can only be read with a key file another backup wrote.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import nats.errors
from nats.aio.client import Client as NATS
from nats.js.errors import BucketNotFoundError

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
)
from hermes_proto.backup_home import copy_file, plain_files, seal, secret_files
from hermes_proto.backup_restore import NatsLauncher, RestoreResult, open_bus, restore_backup
from hermes_proto.backup_skills import bundle_skills
from hermes_proto.backup_streams import StreamError, dump_stream
from hermes_proto.bus import stream_configs
from hermes_proto.keyring import Keyring
from hermes_proto.keystore import KEY_FILE, StoredKey, export_keys, is_key_file_name, write_key_file
from hermes_proto.settings import BusSettings

__all__ = [
    "BackupError",
    "BackupResult",
    "Manifest",
    "MemberEntry",
    "NatsLauncher",
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
    """A written archive: ``path``, ``size`` (bytes), its ``manifest``, the older archives ``pruned``; ``key_file``:
    the data keys' file replaced beside it (None without a passphrase: none written), holding ``keys`` keys."""

    path: Path
    size: int
    manifest: Manifest
    pruned: list[Path] = field(default_factory=list)
    key_file: Path | None = None
    keys: int = 0


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
    renamed; mode 0600), then with ``keep`` delete all but the newest ``keep`` archives there. ``include_key``
    false leaves every secret out (the instance key, ``cli.toml``, ``mcp.toml``: named in the manifest's
    ``skipped_secrets``); true seals them with ``passphrase``. With a ``passphrase`` (whatever ``include_key``) the
    data keys' file ``dest_dir/hermes-keys.sealed`` is replaced too (:mod:`hermes_proto.keystore`; the keys read
    after the streams, so every sealed event archived has its key). Raises :class:`BackupError`:
    ``passphrase_required`` when ``home`` holds a secret, ``include_key`` is true and ``passphrase`` is empty;
    ``invalid_keep`` for ``keep`` < 1; a stream error when the server fails; ``OSError``."""
    if keep is not None and keep < 1:
        raise BackupError("invalid_keep", f"keep must be at least 1, not {keep}")
    home, dest = home.expanduser().resolve(), dest_dir.expanduser().resolve()
    secrets = await asyncio.to_thread(secret_files, home)
    left_out: list[str] = []
    if not include_key:
        secrets, left_out = [], secrets
    if secrets and not passphrase:
        raise BackupError("passphrase_required", f"{home / secrets[0]} is only archived sealed: give a passphrase")
    if streams is None:
        streams = [config.name for config in stream_configs(BusSettings())]
    created = datetime.now(UTC)
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    stage = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix=".hermes-backup-", dir=dest))
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
        keys = await _export(nc) if passphrase else None
        skipped, head = await asyncio.to_thread(_stage_home, home, dest, stage, secrets, passphrase)
        members = await asyncio.to_thread(_members, stage)
        manifest = Manifest(
            FORMAT, SCHEMA_VERSION, created.isoformat(), members, dumps, secrets, head, skipped, missing, left_out
        )
        path = await asyncio.to_thread(pack, stage, manifest, dest, created)
    finally:
        await asyncio.to_thread(shutil.rmtree, stage, ignore_errors=True)
    key_file, count = None, 0
    if keys is not None and passphrase:
        key_file = dest / KEY_FILE
        count = await asyncio.to_thread(write_key_file, key_file, keys, passphrase)
    pruned = await asyncio.to_thread(prune_backups, dest, keep) if keep is not None else []
    size = (await asyncio.to_thread(path.stat)).st_size
    return BackupResult(path, size, manifest, pruned, key_file, count)


async def _export(nc: NATS) -> list[StoredKey]:
    try:
        keyring = await Keyring.connect(nc.jetstream())
    except BucketNotFoundError:  # a server no service started yet: nothing sealed, no key
        return []
    except (nats.errors.Error, TimeoutError) as exc:
        raise BackupError("nats_error", f"binding the data keys' bucket: {exc!r}") from None
    try:
        return await export_keys(keyring, nc)
    except StreamError as exc:
        raise BackupError(exc.code, exc.detail) from None
    except (nats.errors.Error, TimeoutError) as exc:
        raise BackupError("nats_error", f"reading the data keys: {exc!r}") from None


def _members(stage: Path) -> list[MemberEntry]:
    return [member_entry(stage, path) for path in sorted(p for p in stage.rglob("*") if p.is_file())]


def _stage_home(
    home: Path, dest: Path, stage: Path, secrets: list[str], passphrase: bytes | None
) -> tuple[list[str], str | None]:
    files, skipped = plain_files(home, skip=dest if home in dest.parents else None)
    files = [rel for rel in files if not is_key_file_name(rel.rsplit("/", 1)[-1])]  # never in an archive
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

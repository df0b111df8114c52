"""The archive file of a backup (:mod:`hermes_proto.backup`): its manifest, writing it atomically, reading it back
while checking every member, and pruning old ones.

A ``hermes-backup-<UTC time>.tar.gz`` is a gzip-compressed tar whose first member ``manifest.json`` lists every other
member with its size and SHA-256. Reading never trusts the archive: a member must be listed, appear once, be a plain
file under one of the known roots (``streams/``, ``home/``, ``secrets/``, ``skills.bundle``) with no ``.git`` in
its path (the skills repository only travels as the bundle: a ``.git/config`` or hook of the archive's would run
commands) and pass tarfile's ``data`` filter; its bytes must hash as listed; the gzip trailer's CRC is checked too.
The manifest's ``sealed`` paths must be secrets' paths (:func:`hermes_proto.backup_home.sealed_path_ok`) with their
``secrets/<path>.sealed`` member, and ``skills_head`` a commit id or a branch
(:func:`hermes_proto.backup_skills.valid_head`) with a ``skills.bundle`` and no ``home/skills/`` member.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import zlib
from datetime import datetime
from pathlib import Path
from typing import IO

import msgspec

from hermes_proto.backup_home import is_git_name, sealed_path_ok
from hermes_proto.backup_skills import valid_head

FORMAT = 1
MANIFEST = "manifest.json"
PREFIX, SUFFIX = "hermes-backup-", ".tar.gz"
ARCHIVE_NAME = re.compile(r"hermes-backup-\d{8}T\d{6}(\.\d{3})?Z\.tar\.gz")
_ROOTS = {"streams", "home", "secrets", "skills.bundle"}
_CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore that cannot be done. ``code``: ``passphrase_required``, ``bad_passphrase``, ``corrupt``
    (``detail`` names the member), ``not_found``, ``home_not_empty``, ``unsupported_format``, ``invalid_keep``,
    ``skills_failed``, ``nats_unreachable``, ``nats_failed`` (the restore's own server did not start) or a stream
    error (``nats_error``, ``sequence_mismatch``, ``unrestorable_message``, ``state_mismatch``); ``detail``: one line
    for a person."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{detail} [{code}]")
        self.code, self.detail = code, detail


class MemberEntry(msgspec.Struct, frozen=True):
    """One archive member: ``path`` (``/``-separated), ``size`` (bytes), ``sha256`` (hex), ``mode`` (permission
    bits the file is restored with)."""

    path: str
    size: int
    sha256: str
    mode: int = 0o600


class StreamEntry(msgspec.Struct, frozen=True):
    """One archived stream: ``messages`` archived, the sequence range ``first_seq``..``last_seq`` it spanned (every
    message keeps its sequence; an empty stream has ``first_seq`` = ``last_seq`` + 1), durable ``consumers``."""

    name: str
    messages: int
    first_seq: int
    last_seq: int
    consumers: int


class Manifest(msgspec.Struct, frozen=True):
    """``manifest.json``: archive ``format``, Hermes ``schema_version``, ``created_at`` (ISO 8601 UTC), ``members``,
    ``streams``, ``sealed`` (home paths of the secrets in ``secrets/<path>.sealed``), ``skills_head`` (HEAD of the
    bundled skills repository, None without one), ``skipped`` (special files, links and git metadata left out),
    ``missing_streams`` (Hermes streams the server did not have), ``skipped_secrets`` (secrets left out for want
    of a passphrase: the instance key, ``cli.toml``, ``mcp.toml``)."""

    format: int
    schema_version: int
    created_at: str
    members: list[MemberEntry]
    streams: list[StreamEntry]
    sealed: list[str] = []
    skills_head: str | None = None
    skipped: list[str] = []
    missing_streams: list[str] = []
    skipped_secrets: list[str] = []


def member_entry(stage: Path, path: Path) -> MemberEntry:
    """The manifest entry of the staged file ``path`` (its path relative to ``stage``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    mode = path.stat().st_mode & 0o777
    return MemberEntry(path.relative_to(stage).as_posix(), path.stat().st_size, digest.hexdigest(), mode)


def pack(stage: Path, manifest: Manifest, dest: Path, created: datetime) -> Path:
    """Write ``manifest`` and the members it lists (files under ``stage``) as ``dest/hermes-backup-<created>.tar.gz``
    (``20260523T101502.123Z``; a later millisecond when that name is taken): a temporary file (mode 0600), fsynced,
    then renamed. Returns the archive's path; raises ``OSError``."""
    millis = created.microsecond // 1000
    while (final := dest / f"{PREFIX}{created:%Y%m%dT%H%M%S}.{millis:03d}Z{SUFFIX}").exists() and millis < 999:
        millis += 1
    part = dest / f".{final.name}.part"
    with os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
            data = msgspec.json.format(msgspec.json.encode(manifest))
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(data), 0o600, int(created.timestamp())
            tar.addfile(info, io.BytesIO(data))
            for member in manifest.members:
                tar.add(stage / member.path, arcname=member.path, recursive=False, filter=_anonymous)
        raw.flush()
        os.fsync(raw.fileno())
    os.replace(part, final)
    directory = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return final


def _anonymous(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def prune_backups(dest_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` archives named ``hermes-backup-<time>.tar.gz`` in ``dest_dir`` (other
    files are never touched); returns those deleted."""
    archives = sorted((p for p in dest_dir.iterdir() if ARCHIVE_NAME.fullmatch(p.name)), key=lambda p: p.name)
    doomed = archives[: max(0, len(archives) - keep)]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def check_archive(path: Path) -> Manifest:
    """Read the whole archive and verify every member against the manifest; returns the manifest. Raises
    :class:`BackupError`: ``not_found``; ``corrupt`` (naming the member) for a checksum or size mismatch, a member
    missing or not listed, an unsafe path (absolute, ``..``, ``.git``, a link or device), a ``sealed`` path or
    ``skills_head`` that is not what a backup writes (see the module) or an unreadable archive;
    ``unsupported_format`` for a newer archive format."""
    return read_archive(path, None)


def read_archive(path: Path, into: Path | None) -> Manifest:
    """:func:`check_archive`, writing each verified member under ``into`` (a new folder) when given."""
    if not path.is_file():
        raise BackupError("not_found", f"no archive at {path}")
    current = MANIFEST
    try:
        with tarfile.open(path, "r:gz") as tar:  # gzip.GzipFile: its CRC is checked at the end (below)
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise BackupError("corrupt", f"{MANIFEST}: missing (not the first member)")
            manifest = msgspec.json.decode(_read_all(tar, first), type=Manifest)
            if manifest.format > FORMAT:
                raise BackupError(
                    "unsupported_format", f"archive format {manifest.format} (this Hermes reads {FORMAT})"
                )
            listed = {m.path: m for m in manifest.members}
            for name in listed:
                _check_name(name)
            _check_manifest(manifest, set(listed))
            seen: set[str] = set()
            while (member := tar.next()) is not None:
                current = member.name
                _check_name(member.name)
                entry = listed.get(member.name)
                if entry is None or member.name in seen or not member.isfile():
                    raise BackupError("corrupt", f"{member.name}: not listed in the manifest, repeated, or not a file")
                try:
                    tarfile.data_filter(member, str(into or "/nonexistent"))
                except tarfile.FilterError as exc:
                    raise BackupError("corrupt", f"{member.name}: unsafe member ({exc})") from None
                size, digest = _copy(tar.extractfile(member), into / member.name if into else None)
                if size != entry.size or digest != entry.sha256:
                    raise BackupError("corrupt", f"{member.name}: checksum mismatch")
                seen.add(member.name)
            current = "end of archive"
            while tar.fileobj is not None and tar.fileobj.read(_CHUNK):  # to the gzip trailer and its CRC
                pass
            if missing := sorted(set(listed) - seen):
                raise BackupError("corrupt", f"{missing[0]}: listed in the manifest but missing")
            return manifest
    except (OSError, EOFError, tarfile.TarError, zlib.error, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise BackupError("corrupt", f"{current}: unreadable archive ({exc})") from None


def _check_name(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or "\x00" in name or any(p in ("", ".", "..") for p in parts):
        raise BackupError("corrupt", f"{name}: unsafe path")
    if parts[0] not in _ROOTS:
        raise BackupError("corrupt", f"{name}: not a member a Hermes archive has")
    if any(is_git_name(p) for p in parts):
        raise BackupError("corrupt", f"{name}: unsafe member (git metadata travels only as skills.bundle)")


def _check_manifest(manifest: Manifest, members: set[str]) -> None:
    for rel in manifest.sealed:
        if not sealed_path_ok(rel) or f"secrets/{rel}.sealed" not in members or manifest.sealed.count(rel) > 1:
            raise BackupError("corrupt", f"{MANIFEST}: sealed path {rel!r} is not a secret's path or not archived")
    sealed = {f"secrets/{rel}.sealed" for rel in manifest.sealed}
    if extra := sorted(m for m in members if m.startswith("secrets/") and m not in sealed):
        raise BackupError("corrupt", f"{extra[0]}: a sealed member the manifest does not name")
    head = manifest.skills_head
    if head is not None and not valid_head(head):
        raise BackupError("corrupt", f"{MANIFEST}: skills_head {head[:80]!r} is neither a commit id nor a branch")
    if head is not None and ("skills.bundle" not in members or any(m.startswith("home/skills/") for m in members)):
        raise BackupError("corrupt", f"{MANIFEST}: skills_head without skills.bundle, or with home/skills/ files")


def _read_all(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int = 64 << 20) -> bytes:
    handle = tar.extractfile(member)
    if handle is None or member.size > limit:
        raise BackupError("corrupt", f"{member.name}: unreadable")
    return handle.read()


def _copy(source: IO[bytes] | None, target: Path | None) -> tuple[int, str]:
    if source is None:
        raise tarfile.ReadError("no data")
    digest, size = hashlib.sha256(), 0
    out = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
    try:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return size, digest.hexdigest()

"""The data keys next to the backups: ``<backup folder>/hermes-keys.sealed``, so a restored log can be read.

The keys' bucket (:mod:`hermes_proto.keyring`) is never archived: an archive is kept for weeks, and an old one must
not bring back the key of a user forgotten since. Without the keys, though, a restore gets only unreadable personal
events. So every backup made with a passphrase (``hermes backup``, the notary's schedule) also writes ONE key file
in the archives' folder, :data:`KEY_FILE`, with every live key of the bucket (:func:`export_keys`), replaced
atomically each time (a temporary file, fsynced, renamed; mode 0600). The notary writes it again after every forget
(:mod:`hermes_notary.backups`), leaving out the keys the forget names, so a forgotten key leaves the file at the
next write. Copies of the file elsewhere (another folder's ``hermes backup --to``, the user's own copies of the
folder) are the user's business: this module never sees them.

Format: :func:`hermes_proto.backup_home.seal` (scrypt n=2**15, r=8, p=1; AES-256-GCM; label
:data:`KEY_FILE_LABEL`) of the JSON ``{"format": 1, "written_at": <ISO 8601 UTC>, "keys": [{"key_id", "key"
(base64 of 32 bytes), "owner", "created_ms"}, ...]}`` sorted by key id; the backup passphrase opens it (one passphrase
per backup folder: each writer seals with its own). ``hermes restore`` imports the keys into the restored server's
bucket (:func:`import_keys`) before any read model is rebuilt, minus those the restored log itself forgets
(:func:`scan_log`).
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from hermes_proto.backup_archive import BackupError
from hermes_proto.backup_home import SealError as PassphraseError
from hermes_proto.backup_home import seal, unseal
from hermes_proto.backup_streams import NO_STREAM, StreamError, api, read_messages
from hermes_proto.keyring import KEYS_STREAM, KeyEntry, Keyring, sealed_header

KEY_FILE = "hermes-keys.sealed"
KEY_FILE_LABEL = "hermes-keys"
"""The label :func:`hermes_proto.backup_home.seal` authenticates with the key file (an archive's sealed secret,
sealed under another label, cannot be passed off as a key file)."""
FORMAT = 1
_TEMP_PREFIX, _TEMP_SUFFIX = f".{KEY_FILE}.", ".part"
_KV_PREFIX = "$KV.HERMES_KEYS."
_FORGOTTEN_SUFFIX = ".personal_data_forgotten"
_FORGOTTEN_PREFIX = "hermes.evt.privacy."


class KeyFileError(BackupError):
    """A key file that cannot be used. ``code``: ``not_found``, ``bad_passphrase`` (a wrong passphrase, or altered
    bytes: AES-GCM cannot tell them apart), ``corrupt`` (not a sealed key file, or its content is not the format),
    ``unsupported_format`` (written by a newer Hermes), ``passphrase_required``; ``detail``: one line for a person."""


class StoredKey(msgspec.Struct, frozen=True):
    """One data key as the key file holds it: ``key_id`` (``<aggregate_type>.<aggregate_id>``), ``key`` (32 bytes),
    ``owner`` (user id, "" if unknown), ``created_ms`` (Unix ms: the generation sealed payloads name)."""

    key_id: str
    key: bytes
    owner: str
    created_ms: int

    def entry(self) -> KeyEntry:
        return KeyEntry(key=self.key, owner=self.owner, created_ms=self.created_ms)


class KeyFileContent(msgspec.Struct, frozen=True):
    """The JSON inside the seal: ``format``, ``written_at`` (ISO 8601 UTC), ``keys``."""

    format: int
    written_at: str
    keys: list[StoredKey] = []


class _Version(msgspec.Struct):
    format: int


def is_key_file_name(name: str) -> bool:
    """Whether a file name is a key file or one of its temporaries (never archived: see the module)."""
    return name == KEY_FILE or (name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX))


async def export_keys(keyring: Keyring, nc: NATS, leave_out: Mapping[str, int] | None = None) -> list[StoredKey]:
    """Every live key of ``keyring``'s bucket, sorted by key id. The key ids come from the bucket stream's subjects
    (``STREAM.INFO`` paged over ``nc``), the keys from direct gets (one request per key): the rights of the
    ``keys="export"`` grant, no consumer. ``leave_out``: ``{key_id: before_ms}``, generations created at or before
    ``before_ms`` left out (a forget seen in the log whose erase may not have run yet). A missing bucket gives [].
    Raises nats-py's errors and :class:`hermes_proto.backup_streams.StreamError` when the server fails."""
    assert keyring.kv is not None
    found: list[StoredKey] = []
    for key_id in await _key_ids(nc):
        try:
            got = await keyring.kv.get(key_id)
            entry = msgspec.json.decode(got.value or b"", type=KeyEntry)
        except (KeyNotFoundError, KeyDeletedError, msgspec.DecodeError, msgspec.ValidationError):
            continue  # erased since the listing, a purge marker, or not a key
        if leave_out is not None and key_id in leave_out and entry.created_ms <= leave_out[key_id]:
            continue
        found.append(StoredKey(key_id, entry.key, entry.owner, entry.created_ms))
    return sorted(found, key=lambda k: k.key_id)


async def _key_ids(nc: NATS) -> list[str]:
    names: list[str] = []
    offset = 0
    while True:
        try:
            info = await api(nc, f"STREAM.INFO.{KEYS_STREAM}", {"subjects_filter": f"{_KV_PREFIX}>", "offset": offset})
        except StreamError as exc:
            if exc.err_code == NO_STREAM:
                return []
            raise
        subjects = info.get("state", {}).get("subjects") or {}
        names += [s.removeprefix(_KV_PREFIX) for s in subjects]
        offset += len(subjects)
        if not subjects or offset >= int(info.get("total", 0)):
            return sorted(set(names))


def write_key_file(path: Path, entries: Iterable[StoredKey], passphrase: bytes) -> int:
    """Replace ``path`` with the key file of ``entries`` sealed with ``passphrase`` (see the module): a temporary
    file beside it (mode 0600), fsynced, renamed over it, the folder fsynced; a failure removes the temporary and
    leaves the old file as it was. Returns how many keys it holds. Raises ``OSError``; ``ValueError`` for an empty
    passphrase."""
    if not passphrase:
        raise ValueError("a key file is only written sealed: give a passphrase")
    keys = sorted(entries, key=lambda k: k.key_id)
    content = KeyFileContent(FORMAT, datetime.now(UTC).isoformat(), keys)
    blob = seal(msgspec.json.encode(content), passphrase, KEY_FILE_LABEL)
    folder = path.parent
    fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=_TEMP_SUFFIX, dir=folder)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(blob)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return len(keys)


def read_key_file(path: Path, passphrase: bytes | None) -> list[StoredKey]:
    """The keys of the key file at ``path``. Raises :class:`KeyFileError`: ``not_found``, ``passphrase_required``
    (no passphrase), ``bad_passphrase``, ``corrupt``, ``unsupported_format``."""
    if not passphrase:
        raise KeyFileError("passphrase_required", f"the key file {path} is sealed: give its passphrase")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError("not_found", f"no key file at {path}") from None
    except IsADirectoryError:
        raise KeyFileError("not_found", f"{path} is a folder, not a key file") from None
    try:
        data = unseal(blob, passphrase, KEY_FILE_LABEL)
    except PassphraseError as exc:
        if str(exc) == "not a sealed secret":
            raise KeyFileError("corrupt", f"{path} is not a sealed key file") from None
        raise KeyFileError("bad_passphrase", f"the key file {path} does not open with this passphrase") from None
    try:
        version = msgspec.json.decode(data, type=_Version).format
        if version > FORMAT:
            raise KeyFileError("unsupported_format", f"{path}: key file format {version} (this Hermes reads {FORMAT})")
        content = msgspec.json.decode(data, type=KeyFileContent)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise KeyFileError("corrupt", f"{path}: not a key file's content ({exc})") from None
    if any(len(k.key) != 32 or not k.key_id for k in content.keys):
        raise KeyFileError("corrupt", f"{path}: a key that is not 32 bytes, or without an id")
    return content.keys


async def import_keys(target: Keyring | KeyValue, entries: Iterable[StoredKey]) -> int:
    """Create each key in ``target``'s bucket (a :class:`~hermes_proto.keyring.Keyring` or the bucket itself) only
    where its key id has no message at all: a key there is never overwritten, and a purge marker (a key destroyed in
    this bucket) is never replaced, unlike nats-py's ``create``. Returns how many were created. Raises the bucket's
    errors."""
    kv = target.kv if isinstance(target, Keyring) else target
    assert kv is not None
    created = 0
    for stored in entries:
        try:
            await kv.update(stored.key_id, msgspec.json.encode(stored.entry()), last=0)
        except KeyWrongLastSequenceError:
            continue
        created += 1
    return created


@dataclass
class LogKeys:
    """What an archived ``HERMES_EVENTS`` says about keys: ``needed``, the ``(key_id, generation)`` its sealed events
    name; ``forgotten``, ``{key_id: before_ms}`` of its ``PersonalDataForgotten`` events (latest time per key)."""

    needed: set[tuple[str, int]] = field(default_factory=set)
    forgotten: dict[str, int] = field(default_factory=dict)

    def dead(self, key: StoredKey) -> bool:
        """Whether the log forgets this generation of the key (created at or before the forget)."""
        before = self.forgotten.get(key.key_id)
        return before is not None and key.created_ms <= before

    def unreadable(self, keys: Iterable[StoredKey]) -> int:
        """How many key generations the log's sealed events need that neither ``keys`` has nor the log forgets."""
        have = {(k.key_id, k.created_ms) for k in keys}
        return sum(
            1
            for key_id, generation in self.needed
            if (key_id, generation) not in have and generation > self.forgotten.get(key_id, -1)
        )


def scan_log(messages: Path) -> LogKeys:
    """Read an archived stream's ``messages.jsonl`` (:mod:`hermes_proto.backup_streams`) for :class:`LogKeys`; a
    missing file gives an empty one. Raises ``OSError``."""
    from hermes_proto.codec import decode_event  # the codec imports every event type: only when restoring
    from hermes_proto.forgetting import PersonalDataForgotten

    found = LogKeys()
    if not messages.is_file():
        return found
    for message in read_messages(messages):
        subject, data = message["subject"], message["data"]
        if subject.startswith(_FORGOTTEN_PREFIX) and subject.endswith(_FORGOTTEN_SUFFIX):
            try:
                event = decode_event(base64.b64decode(data))
            except Exception:  # noqa: BLE001 - an unreadable event forgets nothing
                continue
            if isinstance(event, PersonalDataForgotten):
                before = int(event.occurred_at.timestamp() * 1000)
                for key_id in event.key_ids:
                    found.forgotten[key_id] = max(found.forgotten.get(key_id, before), before)
        elif data.startswith("HkhL"):  # base64 of the sealed payloads' magic's first three bytes
            header = sealed_header(base64.b64decode(data[:400]))
            if header is not None:
                found.needed.add((header[0], header[1]))
    return found

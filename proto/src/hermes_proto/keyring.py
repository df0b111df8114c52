"""Per-aggregate data keys: the personal events of the log are sealed, and forgetting destroys their keys.

An event of a personal aggregate (:data:`PERSONAL`: a thread, preference, pattern, memory entry, schedule or skill
proposal) is appended as ``MAGIC | len(key_id) | key_id | generation (8) | nonce (12) | AES-256-GCM(JSON, aad=MAGIC|key_id)``
(:func:`seal`): 41 bytes more than the JSON plus the key id. The key of aggregate ``<type>.<id>`` is 32 random bytes in the
JetStream key-value bucket ``HERMES_KEYS`` (history 1, file storage; never archived by ``hermes backup``, see
:mod:`hermes_proto.keystore`), created by the first append of the aggregate with its owner (the event's
``user_id``). :func:`hermes_proto.codec.decode_event` opens sealed payloads with the process's :class:`Keyring`
(:func:`activate`); a payload whose key is gone raises :class:`KeyForgotten` and is skipped by every reader.

Forgetting (:meth:`Keyring.erase`) overwrites each key's stored message (JetStream's secure message delete) and
leaves a purge marker, so the key is gone from the server's files, not only from its index. Cost: bench/shred_cost.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable

import msgspec
import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import (
    KeyDeletedError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue
from prometheus_client import Counter

BUCKET = "HERMES_KEYS"
KEYS_ERASED = "hermes.keys.erased"
"""Core NATS subject of erase notices (:func:`announce_erased`)."""
KEYS_STREAM = f"KV_{BUCKET}"
MAGIC = b"\x1eHK1"
"""The first bytes of a sealed payload (JSON never starts with 0x1e)."""
PERSONAL = frozenset({"thread", "preference", "pattern", "memory_entry", "schedule", "skill_proposal"})
"""Aggregate types whose events are sealed."""
REVIVABLE = frozenset({"preference", "pattern", "memory_entry"})
"""Aggregate types whose ids derive from a user's data (learned again after a forget): their events may start a new
key generation over a destroyed one; a thread, schedule or proposal id is never reused, so theirs never do."""
CLEAR_TYPES = frozenset({"cost_recorded"})
"""Event types of personal aggregates kept in clear: spend is accounting, not content (budgets must survive a
forgotten thread)."""

SEALED = Counter("hermes_keyring_sealed_total", "Event payloads sealed with a data key")
FORGOTTEN_READS = Counter("hermes_keyring_forgotten_reads_total", "Sealed payloads whose key is forgotten")
log = structlog.get_logger("hermes.keyring")


class KeyEntry(msgspec.Struct, frozen=True):
    """One data key as stored in the bucket: ``key`` (32 bytes), ``owner`` (user id, "" if unknown), ``created_ms``
    (Unix ms; retention compares it)."""

    key: bytes
    owner: str
    created_ms: int


_entry_decoder = msgspec.json.Decoder(KeyEntry)


_SAFE_ID = re.compile(r"[A-Za-z0-9_=-]{1,128}")
_KEY_ID = re.compile(r"([a-z_]{1,32})\.(?:[A-Za-z0-9_=-]{1,128}|h-[0-9a-f]{40})")


def key_id_of(aggregate_type: str, aggregate_id: str) -> str:
    """``<aggregate_type>.<aggregate_id>``: the bucket key of an aggregate's data key; an id the bucket's key names
    cannot hold (a producer's ``order:42``, non-ASCII, over 128 characters) becomes ``h-`` + 40 hex digits of its
    SHA-256, so every id maps to one valid key."""
    if _SAFE_ID.fullmatch(aggregate_id):
        return f"{aggregate_type}.{aggregate_id}"
    return f"{aggregate_type}.h-{hashlib.sha256(aggregate_id.encode()).hexdigest()[:40]}"


def aggregate_of(key_id: str) -> tuple[str, str]:
    """``(aggregate_type, id part)`` of a key id (the id part is the hashed form for ids :func:`key_id_of` hashed)."""
    kind, _, rest = key_id.partition(".")
    return kind, rest


def sealed_header(data: bytes) -> tuple[str, int, int] | None:
    """``(key_id, generation, header_length)`` of a sealed payload; None when ``data`` is not one: cut, or a key id
    that is not one :func:`key_id_of` makes for a personal aggregate type (such a payload is unsealable, never a
    bucket request)."""
    if not data.startswith(MAGIC) or len(data) < 5:
        return None
    end = 5 + data[4]
    if len(data) < end + 8 + 12 + 16:
        return None
    try:
        key_id = data[5:end].decode("ascii")
    except UnicodeDecodeError:
        return None
    match = _KEY_ID.fullmatch(key_id)
    if match is None or match.group(1) not in PERSONAL:
        return None
    return key_id, int.from_bytes(data[end : end + 8], "big"), end + 8


def seal(key_id: str, entry: KeyEntry, plaintext: bytes, cipher: AESGCM | None = None) -> bytes:
    """The sealed form of ``plaintext`` under ``entry`` (module docstring); ``key_id`` is ASCII, < 256 bytes. The
    generation (the key's ``created_ms``) tells a payload of a destroyed key from one of its successor. ``cipher``:
    ``AESGCM(entry.key)`` if the caller keeps one (making it costs ~3 µs, bench/shred_cost.py)."""
    kid = key_id.encode("ascii")
    nonce = os.urandom(12)
    header = MAGIC + bytes([len(kid)]) + kid + entry.created_ms.to_bytes(8, "big")
    return header + nonce + (cipher or AESGCM(entry.key)).encrypt(nonce, plaintext, header)


class SealError(ValueError):
    """A sealed payload could not be opened; ``reason`` is the machine-readable code (dead letters carry it)."""

    reason = "unsealable"


class KeyForgotten(SealError):
    """The payload's key was destroyed (forgotten, retention, or never restored): it can never be read."""

    reason = "forgotten"


class KeyUnavailable(SealError):
    """The payload's key is not loaded in this process yet (:meth:`Keyring.ready` loads it)."""

    reason = "key_unavailable"


class Keyring:
    """The data keys this process has loaded, and the bucket they come from. ``ready``/``ensure`` are async (one
    direct get per key not yet loaded, ~0.3 ms); ``open`` is synchronous (the codec's). A key id names the current
    generation of an aggregate's key; ``(key_id, generation)`` pairs known destroyed are remembered."""

    def __init__(self, kv: KeyValue | None = None, sealing: bool = True) -> None:
        self.kv = kv
        self.sealing = sealing
        """Whether appends seal personal data (False still opens sealed payloads)."""
        self._keys: dict[str, KeyEntry] = {}
        self._ciphers: dict[bytes, AESGCM] = {}
        self._dead: set[tuple[str, int]] = set()
        self._dead_before: dict[str, int] = {}
        """Per key id, the time (Unix ms) a forget named it: a generation created at or before it is dead even while
        the bucket still holds it (the erase follows the forget's event)."""
        self._missing: set[str] = set()

    @classmethod
    async def connect(cls, js: JetStreamContext) -> Keyring:
        """Bind the bucket (:func:`ensure_bucket` made it); raises ``BucketNotFoundError``."""
        return cls(await js.key_value(BUCKET))

    def open(self, data: bytes) -> bytes:
        """The JSON inside sealed ``data``; raises :class:`KeyForgotten`, :class:`KeyUnavailable` or
        :class:`SealError` (cut, altered, or under a wrong key)."""
        header = sealed_header(data)
        if header is None:
            raise SealError("malformed sealed payload")
        key_id, generation, end = header
        entry = self._keys.get(key_id)
        if entry is None or entry.created_ms != generation:
            if (key_id, generation) in self._dead or entry is None and key_id in self._missing:
                FORGOTTEN_READS.inc()
                raise KeyForgotten(f"key {key_id} generation {generation} is destroyed")
            raise KeyUnavailable(f"key {key_id} generation {generation} is not loaded")
        try:
            return self.cipher(entry).decrypt(data[end : end + 12], data[end + 12 :], data[:end])
        except Exception as exc:  # InvalidTag: altered bytes
            raise SealError(f"payload under key {key_id} fails authentication") from exc

    def forget_loaded(self, key_ids: Iterable[str], before_ms: int) -> None:
        """Treat the generations of these keys created at or before ``before_ms`` as destroyed, loaded or not (a
        ``PersonalDataForgotten`` event's time, or an erase notice's: a later generation is a new life)."""
        for key_id in key_ids:
            self._dead_before[key_id] = max(before_ms, self._dead_before.get(key_id, 0))
            entry = self._keys.get(key_id)
            if entry is not None and entry.created_ms <= before_ms:
                del self._keys[key_id]
                self._ciphers.pop(entry.key, None)
                self._dead.add((key_id, entry.created_ms))

    def _condemned(self, key_id: str, entry: KeyEntry) -> bool:
        return entry.created_ms <= self._dead_before.get(key_id, 0)

    def known(self, key_id: str) -> KeyEntry | None:
        return self._keys.get(key_id)

    def cipher(self, entry: KeyEntry) -> AESGCM:
        """The AES-GCM context of a loaded key, made once (dropped with the key)."""
        found = self._ciphers.get(entry.key)
        if found is None:
            found = self._ciphers[entry.key] = AESGCM(entry.key)
        return found

    def seal(self, key_id: str, entry: KeyEntry, plaintext: bytes) -> bytes:
        """:func:`seal` with this keyring's cached cipher of ``entry``."""
        return seal(key_id, entry, plaintext, self.cipher(entry))

    async def _load(self, key_id: str) -> tuple[KeyEntry | None, int | None]:
        """``(entry, marker_revision)``: the stored key; or None and the revision of the purge marker standing in its
        place (None: it never existed)."""
        if self.kv is None:
            return None, None
        try:
            got = await self.kv.get(key_id)
        except (KeyNotFoundError, KeyDeletedError) as exc:  # nats-py reports a purged key as not found, with entry
            self._missing.add(key_id)
            marker = getattr(exc, "entry", None)
            return None, (marker.revision or 0) if marker is not None else None
        try:
            entry = _entry_decoder.decode(got.value or b"")
        except msgspec.DecodeError:
            log.error("key_entry_corrupt", key_id=key_id)
            self._missing.add(key_id)
            return None, got.revision
        if self._condemned(key_id, entry):  # forgotten, its erase not done yet: never used again
            self._dead.add((key_id, entry.created_ms))
            return None, got.revision
        old = self._keys.get(key_id)
        if old is not None and old.created_ms != entry.created_ms:
            self._dead.add((key_id, old.created_ms))
        self._keys[key_id] = entry
        self._missing.discard(key_id)
        return entry, None

    async def ready(self, payloads: Iterable[bytes]) -> None:
        """Load the keys the sealed ones among ``payloads`` need; a generation the bucket no longer has is recorded
        destroyed (:meth:`open` then raises :class:`KeyForgotten`)."""
        for data in payloads:
            if data[:1] != MAGIC[:1]:
                continue
            header = sealed_header(data)
            if header is None:
                continue
            key_id, generation, _ = header
            entry = self._keys.get(key_id)
            if entry is not None and entry.created_ms == generation or (key_id, generation) in self._dead:
                continue
            entry, _ = await self._load(key_id)
            if entry is None or entry.created_ms != generation:
                self._dead.add((key_id, generation))

    async def ensure(self, key_id: str, owner: str, revive: bool = False) -> KeyEntry | None:
        """The current key of ``key_id``, created with ``owner`` if the aggregate never had one. A destroyed key is
        replaced by a new generation only when ``revive`` (an event of an aggregate whose id a user's data derives
        again: a preference learned anew) and ``owner`` is known; otherwise None: the caller must not append
        personal data of a forgotten aggregate. Raises the bucket's errors (NATS unreachable, no permission)."""
        entry = self._keys.get(key_id)
        if entry is not None:
            return entry
        entry, marker = await self._load(key_id)
        if entry is not None:
            return entry
        if marker is not None and not (revive and owner):
            return None  # destroyed (or condemned, its erase pending)
        created = max(int(time.time() * 1000), self._dead_before.get(key_id, 0) + 1)
        fresh = KeyEntry(key=AESGCM.generate_key(bit_length=256), owner=owner, created_ms=created)
        assert self.kv is not None
        try:  # last: only over nothing (or the marker we saw): a concurrent creator wins
            await self.kv.update(key_id, msgspec.json.encode(fresh), last=marker or 0)
        except KeyWrongLastSequenceError:
            return (await self._load(key_id))[0]
        self._keys[key_id] = fresh
        self._missing.discard(key_id)
        return fresh

    async def entries(self) -> list[tuple[str, KeyEntry, int]]:
        """Every live key as ``(key_id, entry, revision)``, read from the bucket's stream in order (one message get
        per key: an operator's scan, not a hot path; a purge marker is skipped)."""
        assert self.kv is not None
        js, prefix = self.kv._js, f"$KV.{BUCKET}."
        found, seq = [], 1
        while True:
            try:
                msg = await js.get_msg(KEYS_STREAM, seq=seq, subject=f"{prefix}>", next=True)
            except NotFoundError:
                return found
            seq = (msg.seq or seq) + 1
            if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
                continue
            try:
                entry = _entry_decoder.decode(msg.data)
            except msgspec.DecodeError:
                log.error("key_entry_corrupt", key_id=(msg.subject or "")[len(prefix) :])
                continue
            found.append(((msg.subject or "")[len(prefix) :], entry, msg.seq or 0))

    async def erase(self, js: JetStreamContext, key_ids: Iterable[str]) -> list[str]:
        """Destroy these keys: a delete marker first (the key reads as gone from then on), then every stored key
        message of the id is overwritten (JetStream's secure delete, not only unindexed). Idempotent: run again
        after a crash it finishes what is left. Returns the ids that still had key bytes to overwrite."""
        assert self.kv is not None
        erased = []
        for key_id in key_ids:
            subject = f"$KV.{BUCKET}.{key_id}"
            _, marker = await self._load(key_id)
            if marker is None:
                await self.kv.delete(key_id)
            seq, wiped = 1, False
            while True:
                try:
                    msg = await js.get_msg(KEYS_STREAM, seq=seq, subject=subject, next=True)
                except NotFoundError:
                    break
                seq = (msg.seq or seq) + 1
                if (msg.headers or {}).get("KV-Operation") not in ("DEL", "PURGE"):
                    await js.delete_msg(KEYS_STREAM, msg.seq or 0)
                    wiped = True
            entry = self._keys.pop(key_id, None)
            if entry is not None:
                self._ciphers.pop(entry.key, None)
                self._dead.add((key_id, entry.created_ms))
            self._missing.add(key_id)
            if wiped:
                erased.append(key_id)
        return erased

    async def listen(self, nc: NATS) -> None:
        """Drop keys named by every erase notice (:data:`KEYS_ERASED`, published by the eraser): a process that
        never decodes the forget's event (an edge, the gateway) stops using them too."""

        async def on_notice(msg: Msg) -> None:
            try:
                notice = _notice_decoder.decode(msg.data)
            except msgspec.DecodeError:
                log.warning("bad_erase_notice")
                return
            self.forget_loaded(notice.key_ids, notice.before_ms)

        await nc.subscribe(KEYS_ERASED, cb=on_notice)


class ErasedNotice(msgspec.Struct, frozen=True):
    """Core NATS :data:`KEYS_ERASED`: ``key_ids`` destroyed; generations created at or before ``before_ms`` (Unix
    ms) are dead."""

    key_ids: list[str]
    before_ms: int


_notice_decoder = msgspec.json.Decoder(ErasedNotice)


async def announce_erased(nc: NATS, key_ids: list[str], before_ms: int) -> None:
    """Publish an :class:`ErasedNotice` (core NATS, at most once: a process that misses it loads keys afresh at its
    next start, and the bucket no longer has them)."""
    await nc.publish(KEYS_ERASED, msgspec.json.encode(ErasedNotice(key_ids, before_ms)))


async def ensure_bucket(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the bucket's stream if absent: a key-value stream (one message per key, rollups, direct gets) that,
    unlike nats-py's default, permits message deletes, so :meth:`Keyring.erase` can overwrite a key's bytes."""
    try:
        await js.stream_info(KEYS_STREAM)
        return
    except NotFoundError:
        pass
    await js.add_stream(
        StreamConfig(
            name=KEYS_STREAM,
            subjects=[f"$KV.{BUCKET}.>"],
            allow_direct=True,
            allow_rollup_hdrs=True,
            deny_delete=False,
            discard=DiscardPolicy.NEW,
            max_msgs_per_subject=2,  # a delete marker beside the key until its bytes are overwritten
            num_replicas=replicas,
            storage=StorageType.FILE,
        )
    )


_active: Keyring | None = None


def activate(keyring: Keyring | None) -> None:
    """Make ``keyring`` the one :func:`hermes_proto.codec.decode_event` and :class:`hermes_proto.bus.EventStore`
    use in this process (None: seal nothing, open nothing)."""
    global _active
    _active = keyring


def active() -> Keyring | None:
    return _active


async def ready(payloads: Iterable[bytes]) -> None:
    """:meth:`Keyring.ready` on the active keyring (nothing without one)."""
    if _active is not None:
        await _active.ready(payloads)


async def start(js: JetStreamContext, seal: bool = True) -> Keyring:
    """Connect the bucket (made by :func:`hermes_proto.bus.ensure_streams`), listen for erase notices and activate
    it: every service's bootstrap, after the streams exist. ``seal`` False (``HERMES_SEAL_PERSONAL_DATA=false``)
    still opens sealed events but appends new ones in clear."""
    keyring = await Keyring.connect(js)
    keyring.sealing = seal
    await keyring.listen(js._nc)
    activate(keyring)
    return keyring


def is_personal(aggregate_type: str, type_name: str) -> bool:
    """Whether an event of this aggregate type and tag is sealed (:data:`PERSONAL` minus :data:`CLEAR_TYPES`)."""
    return aggregate_type in PERSONAL and type_name not in CLEAR_TYPES
